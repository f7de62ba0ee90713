"""+1 verdicts remembered by their leading digits: exact, checked against libphonenumber itself."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator

import pytest

from bwasync.compliance import _numbers, check_number
from bwasync.compliance._constants import NANP_ANALYSED
from bwasync.compliance._prefixes import decisive_digits, nanp_decisive_digits, nanp_patterns, patterns_digest

pn = pytest.importorskip("phonenumbers")


def _brute_force(pattern: str, length: int, prefix_match: bool) -> int:
    """The fewest leading digits deciding ``pattern``, by trying every string of ``length`` digits."""
    compiled = re.compile(pattern)
    test = compiled.match if prefix_match else compiled.fullmatch
    matches = {"".join(d): test("".join(d)) is not None for d in itertools.product("0123456789", repeat=length)}
    for decided in range(length + 1):
        verdicts: dict[str, set[bool]] = {}
        for digits, ok in matches.items():
            verdicts.setdefault(digits[:decided], set()).add(ok)
        if all(len(v) == 1 for v in verdicts.values()):
            return decided
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("pattern", "prefix_match"),
    [
        (r"\d{4}", False),
        (r"2\d{3}", False),
        (r"[2-9]\d{3}|3\d{2}", False),
        (r"(?:12|3[4-6])\d\d", False),
        (r"(?:1[0-4]|1[5-9])\d\d", False),  # decided at 1 digit although written as two ranges
        (r"12(?:3[0-4]|4)\d?", False),
        (r"9(?:0[1-3]|1[02])\d", False),
        (r"5(?:00|2[125-9])", True),
        (r"26[48]", True),
        (r"7\d*", False),
        (r"(?:8\d)+", False),
        (r"[^5]\d{3}", False),
    ],
)
def test_decisive_digits_agrees_with_trying_every_number(pattern: str, prefix_match: bool) -> None:
    assert decisive_digits(pattern, 4, prefix_match) == _brute_force(pattern, 4, prefix_match)


def test_decisive_digits_refuses_what_it_does_not_model() -> None:
    with pytest.raises(ValueError):
        decisive_digits(r"(\d)\1", 2)


def test_the_analysed_metadata_is_the_installed_one() -> None:
    # A phonenumbers upgrade changes the patterns: update NANP_ANALYSED with these two values
    # (until then check_number analyses the new metadata once per process, ~1 s).
    digest, digits = NANP_ANALYSED
    assert patterns_digest(nanp_patterns(pn)) == digest, "phonenumbers' +1 metadata changed"
    assert nanp_decisive_digits(pn) == digits


def _sample(seed: int) -> Iterator[str]:
    """+1 numbers in blocks sharing their first 7 digits: area codes in use (valid and invalid
    exchanges), unused and impossible ones, toll-free and Caribbean ranges."""
    from phonenumbers.tzdata import TIMEZONE_DATA

    rng = random.Random(seed)
    in_use = sorted(k[1:4] for k in TIMEZONE_DATA if len(k) == 4 and k.startswith("1"))
    special = ["800", "833", "900", "500", "521", "524", "268", "246", "876", "787", "809", "555", "200", "911"]
    for _ in range(700):
        pick = rng.random()
        if pick < 0.6:
            area = rng.choice(in_use)
        elif pick < 0.85:
            area = rng.choice(special)
        else:
            area = f"{rng.randrange(1000):03d}"
        block = area + f"{rng.randrange(10000):04d}"
        for _ in range(3):
            yield f"+1{block}{rng.randrange(1000):03d}"


def test_every_number_of_a_block_gets_libphonenumbers_own_verdict() -> None:
    check_number.cache_clear()
    _numbers._BY_PREFIX.clear()
    valid = 0
    for number in _sample(20261202):
        check = check_number(number)
        parsed = pn.parse(number)
        expected = pn.region_code_for_number(parsed) if pn.is_valid_number(parsed) else None
        assert (check.valid, check.region) == (expected is not None, expected), number
        assert check == _numbers._check(number), number  # the reason too
        valid += check.valid
    assert 300 < valid < 1800  # the sample has both kinds in numbers


def test_other_metadata_is_analysed_instead_of_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_numbers, "NANP_ANALYSED", ("another release", 3))
    _numbers._nanp_key_length.cache_clear()
    try:
        assert _numbers._nanp_key_length() == 2 + nanp_decisive_digits(pn)
    finally:
        _numbers._nanp_key_length.cache_clear()


def test_the_block_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_numbers, "NUMBER_PREFIX_CACHE_SIZE", 5)
    check_number.cache_clear()
    _numbers._BY_PREFIX.clear()
    for i in range(12):
        assert check_number(f"+1919{i:03d}0000").region in (None, "US")
        assert len(_numbers._BY_PREFIX) <= 5
