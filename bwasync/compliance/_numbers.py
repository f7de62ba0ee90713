"""What libphonenumber knows about a number: can it exist, and in which time zones does it ring.

Both need the optional ``phonenumbers`` package (``pip install 'bwasync[compliance]'``),
imported on first use so that the rest of bwasync never needs it.

Bandwidth accepts anything shaped like E.164 (``+1555`` passes its validation), and so does
:class:`~bwasync.MessageRequest`, which keeps to Bandwidth's own rules. :func:`check_number`
says whether a number can be real, with the reason when it cannot::

    check_number("+15555551234")   # NumberCheck(valid=False, reason='invalid area code 555: ...')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

from .._exceptions import ConfigurationError
from .._validation import is_e164
from ._constants import NANP_ANALYSED, NUMBER_CACHE_SIZE, NUMBER_PREFIX_CACHE_SIZE
from ._prefixes import nanp_decisive_digits, nanp_patterns, patterns_digest

__all__ = ["NumberCheck", "check_number", "zones_for_number"]

logger = logging.getLogger("bwasync.compliance")

_INSTALL_HINT = "pip install 'bwasync[compliance]'"


@dataclass(frozen=True, slots=True)
class NumberCheck:
    """Whether a number can exist (libphonenumber's validity rules), and why not.

    ``region`` is the ISO 3166 region the number belongs to (``"US"``), when it is valid;
    ``"001"`` for non-geographic numbers (international freephone ``+800``...).
    """

    valid: bool
    reason: str | None = None
    region: str | None = None


def _phonenumbers() -> ModuleType:
    try:
        import phonenumbers
    except ImportError:
        raise ConfigurationError(f"checking numbers needs the phonenumbers package: {_INSTALL_HINT}") from None
    return phonenumbers


def numbers_checkable() -> bool:
    """Whether :func:`check_number` can run: the ``compliance`` extra (phonenumbers) is installed."""
    try:
        _phonenumbers()
    except ConfigurationError:
        return False
    return True


def _parse(pn: ModuleType, number: str) -> Any:
    """An E.164 string as a ``PhoneNumber``, digit for digit; None if no country has its code.

    ``phonenumbers.parse`` would take ~150 µs (it formats, normalises and strips trunk
    prefixes for any human spelling); an E.164 number only needs its country code split off
    (country codes are prefix-free: 1 to 3 digits) and, as ``parse`` does, its leading zeros
    kept. Taking the digits as they are is also what Bandwidth will be sent: ``+1 1 919...``
    is too long, not "919..." with a trunk prefix.
    """
    digits = number[1:]
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in pn.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    parsed = pn.PhoneNumber(country_code=code, national_number=int(national or "0"))
    if len(national) > 1 and national[0] == "0":
        parsed.italian_leading_zero = True
        zeros = len(national) - len(national.lstrip("0"))
        if min(zeros, len(national) - 1) > 1:
            parsed.number_of_leading_zeros = min(zeros, len(national) - 1)
    return parsed


@lru_cache(maxsize=NUMBER_CACHE_SIZE)
def check_number(number: str) -> NumberCheck:
    """Whether an E.164 number can exist, with a human reason when it cannot.

    Reasons: not in E.164 form; invalid country code; too short, too long or of an invalid
    length for the country; for North American (+1) numbers, an invalid area code (one that
    cannot exist, or that no place uses) or exchange; otherwise not a valid number for the
    country (no range of its numbering plan holds it). A valid number may still be
    unassigned or disconnected: libphonenumber knows numbering plans, not subscribers.

    >>> check_number("+12125551234")
    NumberCheck(valid=True, reason=None, region='US')
    """
    if len(number) == 12 and number.startswith("+1") and number.isascii() and number[2:].isdigit():
        # Every +1 number of one NPA-NXX-X block gets the same verdict (see _prefixes).
        key = number[: _nanp_key_length()]
        found = _BY_PREFIX.get(key)
        if found is None:
            found = _check(number)
            if len(_BY_PREFIX) >= NUMBER_PREFIX_CACHE_SIZE:
                _BY_PREFIX.clear()
            _BY_PREFIX[key] = found
        return found
    return _check(number)


#: "+1" and the leading national digits -> the verdict of every number that starts so.
_BY_PREFIX: dict[str, NumberCheck] = {}


@lru_cache(maxsize=1)
def _nanp_key_length() -> int:
    """Characters of ``+1XXXXXXXXXX`` that decide its verdict: ``+1`` and the decisive digits."""
    pn = _phonenumbers()
    digest, digits = NANP_ANALYSED
    if patterns_digest(nanp_patterns(pn)) != digest:
        digits = nanp_decisive_digits(pn)
        logger.debug("phonenumbers %s: +1 verdicts are decided by %d digits", pn.__version__, digits)
    # The reason for an invalid number names its area code and exchange: 6 digits at least.
    return 2 + max(digits, 6)


def _check(number: str) -> NumberCheck:
    if not is_e164(number):
        return NumberCheck(False, "not an E.164 number ('+' and 2 to 15 digits, the first 1 to 9)")
    pn = _phonenumbers()
    parsed = _parse(pn, number)
    if parsed is None:
        codes = ", ".join(f"+{number[1 : 2 + i]}" for i in range(3))
        return NumberCheck(False, f"invalid country code: none of {codes} is a country code")
    country = parsed.country_code
    main_region = pn.region_code_for_country_code(country)
    where = f"+{country} ({'non-geographic' if main_region == pn.REGION_CODE_FOR_NON_GEO_ENTITY else main_region})"
    possible = pn.is_possible_number_with_reason(parsed)
    result = pn.ValidationResult
    if possible in (result.TOO_SHORT, result.IS_POSSIBLE_LOCAL_ONLY):
        return NumberCheck(False, f"too short for {where}")
    if possible == result.TOO_LONG:
        return NumberCheck(False, f"too long for {where}")
    if possible == result.INVALID_LENGTH:
        return NumberCheck(False, f"invalid length for {where}")
    region = _valid_region(pn, parsed, country)
    if region is not None:
        return NumberCheck(True, None, region)
    if country == 1:
        return NumberCheck(False, _nanp_reason(pn.national_significant_number(parsed)))
    return NumberCheck(False, f"not a valid number for {where}: no number range of its numbering plan holds it")


#: NANP area code -> the region a valid number with it was last found in. The +1 country code
#: spans ~25 regions, and ``region_code_for_number`` tries each one's patterns in turn (~100 µs
#: a number, most of a campaign's load pass); an area code belongs to one region, so trying that
#: region first settles a valid number in one match. Bounded by the ~800 area codes in use.
_REGION_BY_AREA: dict[str, str] = {}


def _valid_region(pn: ModuleType, parsed: Any, country: int) -> str | None:
    """The region ``parsed`` is a valid number of, or None (``is_valid_number``, with its region)."""
    area = str(parsed.national_number)[:3] if country == 1 else None
    if area is not None:
        known = _REGION_BY_AREA.get(area)
        if known is not None and pn.is_valid_number_for_region(parsed, known):
            return known
    region: str | None = pn.region_code_for_number(parsed)  # is_valid_number would find it again
    if region is None or not pn.is_valid_number_for_region(parsed, region):
        return None
    if area is not None:
        _REGION_BY_AREA[area] = region
    return region


def _nanp_reason(national: str) -> str:
    """Why a 10-digit North American number of the right shape is still invalid."""
    area, exchange = national[:3], national[3:6]
    if area[0] in "01":
        return f"invalid area code {area}: North American area codes start with 2-9"
    if area[1:] == "11":
        return f"invalid area code {area}: N11 codes are service numbers (211, 411, 911...), not area codes"
    if not _area_code_in_use(area):
        return f"invalid area code {area}: no place uses it"
    if exchange[0] in "01":
        return f"invalid exchange {exchange} in area code {area}: exchanges start with 2-9"
    if exchange[1:] == "11":
        return f"invalid exchange {exchange} in area code {area}: N11 exchanges are not assigned"
    return f"not a valid number in area code {area}: the exchange {exchange} is not in use there"


def _area_code_in_use(area: str) -> bool:
    # libphonenumber's time zone data lists every North American area code in use for
    # geographic numbers; non-geographic ones (toll-free 8XX...) give valid numbers and never
    # reach this check.
    from phonenumbers.tzdata import TIMEZONE_DATA

    return ("1" + area) in TIMEZONE_DATA


@lru_cache(maxsize=NUMBER_CACHE_SIZE)
def zones_for_number(number: str) -> tuple[str, ...]:
    """The IANA time zones a number may ring in (libphonenumber's data); ``()`` if none is known.

    Several zones come back for a number whose area spans them (``+1 701`` North Dakota:
    Denver and Chicago time) and for non-geographic numbers (a mobile number of a country
    with several zones gets all of them). A number libphonenumber cannot place (an invalid or
    unassigned range) gets the zones of the longest prefix it knows, down to its whole country
    (every zone of the North American Numbering Plan for a ``+1`` number: Guam to
    Newfoundland), so quiet hours hold it until it is daytime everywhere it could be. Only a
    number whose country code is unknown gets ``()``.

    >>> zones_for_number("+12125551234")
    ('America/New_York',)
    """
    if not is_e164(number):
        return ()
    pn = _phonenumbers()
    from phonenumbers import timezone

    parsed = _parse(pn, number)
    if parsed is None:
        return ()
    zones = timezone.time_zones_for_number(parsed)
    if zones == (timezone.UNKNOWN_TIMEZONE,):
        zones = timezone.time_zones_for_geographical_number(parsed)
    return tuple(z for z in zones if z != timezone.UNKNOWN_TIMEZONE)
