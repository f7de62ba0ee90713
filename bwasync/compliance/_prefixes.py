"""How many leading digits decide whether a North American (+1) number is valid.

libphonenumber decides a +1 number's validity (and its region) with regular expressions over
its ten national digits: for each of the ~25 regions sharing +1, a leading-digits pattern
(matched as a prefix) and a pattern per number type (matched whole). If every one of those
patterns gives the same answer for all ten-digit numbers that share their first ``L`` digits,
then so does the whole check, and a verdict found for one number holds for every number with
the same first ``L`` digits: :func:`bwasync.compliance.check_number` remembers verdicts by that
prefix (``L`` = 7 for libphonenumber's current data: one NPA-NXX plus one digit).

:func:`decisive_digits` computes that ``L`` for one pattern exactly, by running the pattern as
an automaton over digit strings: after ``L`` digits, every set of states the automaton can be
in must accept either every remaining suffix or none. Nothing is sampled.

>>> decisive_digits(r"2(?:0[1-3]|12)\\d{7}", 10)
3
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from functools import lru_cache
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from types import ModuleType
from typing import Any

__all__ = ["decisive_digits", "nanp_decisive_digits", "nanp_patterns", "patterns_digest"]

_DIGITS = "0123456789"
_ALL: frozenset[str] = frozenset(_DIGITS)
#: The number-type descriptions libphonenumber's ``_number_type_helper`` matches a number
#: against (``general_desc`` first); validity is "general_desc and any of the others".
_DESCS = (
    "general_desc",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
#: National significant digits of a +1 number.
NANP_DIGITS = 10


class _Automaton:
    """A Thompson automaton over the digits 0-9: ε-moves and digit-set moves."""

    __slots__ = ("accept", "eps", "moves", "start")

    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.moves: list[list[tuple[frozenset[str], int]]] = []
        self.start = self.state()
        self.accept = self.start

    def state(self) -> int:
        self.eps.append([])
        self.moves.append([])
        return len(self.eps) - 1

    def closure(self, states: Iterable[int]) -> frozenset[int]:
        stack = list(states)
        seen = set(stack)
        while stack:
            for nxt in self.eps[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)


def _charset(op: Any, av: Any) -> frozenset[str]:
    """The digits one pattern item matches (anything that is not a digit never matches input)."""
    if op is sre.LITERAL:
        return _ALL & {chr(av)}
    if op is sre.NOT_LITERAL:
        return _ALL - {chr(av)}
    if op is sre.ANY:
        return _ALL
    if op is sre.IN:
        chars: set[str] = set()
        negate = False
        for o, a in av:
            if o is sre.NEGATE:
                negate = True
            elif o is sre.LITERAL:
                chars.add(chr(a))
            elif o is sre.RANGE:
                chars.update(chr(c) for c in range(a[0], a[1] + 1))
            elif o is sre.CATEGORY and a is sre.CATEGORY_DIGIT:
                chars.update(_DIGITS)
            else:
                raise ValueError(f"unsupported character class item {o}")
        return _ALL - chars if negate else _ALL & chars
    raise ValueError(f"unsupported pattern item {op}")


def _build(a: _Automaton, items: Iterable[tuple[Any, Any]], cur: int) -> int:
    """Append ``items`` (a parsed pattern) after state ``cur``; return the state it ends in."""
    for op, av in items:
        if op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            nxt = a.state()
            a.moves[cur].append((_charset(op, av), nxt))
            cur = nxt
        elif op is sre.SUBPATTERN:
            cur = _build(a, av[3], cur)
        elif op is sre.BRANCH:
            end = a.state()
            for alternative in av[1]:
                first = a.state()
                a.eps[cur].append(first)
                a.eps[_build(a, alternative, first)].append(end)
            cur = end
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, sub = av
            for _ in range(low):
                cur = _build(a, sub, cur)
            end = a.state()
            if high is sre.MAXREPEAT:
                loop = a.state()
                a.eps[cur].append(loop)
                a.eps[_build(a, sub, loop)].append(loop)
                a.eps[loop].append(end)
            else:
                for _ in range(high - low):
                    a.eps[cur].append(end)
                    cur = _build(a, sub, cur)
                a.eps[cur].append(end)
            cur = end
        else:
            raise ValueError(f"unsupported pattern construct {op}")
    return cur


@lru_cache(maxsize=512)
def decisive_digits(pattern: str, length: int, prefix_match: bool = False) -> int:
    """The fewest leading digits that decide whether ``pattern`` matches a ``length``-digit string.

    Whole-string match (``re.fullmatch``), or a match at the start (``re.match``) with
    ``prefix_match``. Exact: for every string of the first ``L`` digits, the pattern matches
    either all ``length``-digit strings starting with them, or none. Raises ValueError for a
    construct it does not model (anchors, lookarounds, backreferences).
    """
    a = _Automaton()
    a.accept = _build(a, sre_parse.parse(pattern), a.start)
    if prefix_match:  # matched at the start: anything may follow
        a.moves[a.accept].append((_ALL, a.accept))
    steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}
    verdicts: dict[tuple[frozenset[int], int], int] = {}

    def step(states: frozenset[int], digit: str) -> frozenset[int]:
        key = (states, digit)
        found = steps.get(key)
        if found is None:
            found = steps[key] = a.closure(t for s in states for chars, t in a.moves[s] if digit in chars)
        return found

    def verdict(states: frozenset[int], left: int) -> int:
        """1: every ``left``-digit suffix is accepted from ``states``; 0: none; -1: it depends."""
        key = (states, left)
        found = verdicts.get(key)
        if found is None:
            if left == 0:
                found = int(a.accept in states)
            elif not states:
                found = 0
            else:
                seen = {verdict(step(states, d), left - 1) for d in _DIGITS}
                found = seen.pop() if len(seen) == 1 else -1
            verdicts[key] = found
        return found

    level = {a.closure((a.start,))}
    for decided in range(length + 1):
        if all(verdict(states, length - decided) >= 0 for states in level):
            return decided
        level = {step(states, d) for states in level for d in _DIGITS}
    return length  # pragma: no cover (after `length` digits nothing is left to depend on)


def nanp_patterns(pn: ModuleType) -> Iterator[tuple[str, bool]]:
    """Every pattern libphonenumber's validity check of a +1 number reads: ``(pattern, prefix_match)``."""
    from phonenumbers.phonemetadata import PhoneMetadata

    for region in pn.COUNTRY_CODE_TO_REGION_CODE[1]:
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            continue
        if metadata.leading_digits:
            yield metadata.leading_digits, True
        for name in _DESCS:
            desc = getattr(metadata, name, None)
            if desc is not None and desc.national_number_pattern:
                yield desc.national_number_pattern, False


def patterns_digest(patterns: Iterable[tuple[str, bool]]) -> str:
    """A SHA-256 over the patterns, to recognise metadata already analysed."""
    h = hashlib.sha256()
    for pattern, prefix in patterns:
        h.update(f"{int(prefix)}{pattern}\n".encode())
    return h.hexdigest()


def nanp_decisive_digits(pn: ModuleType) -> int:
    """The leading national digits that decide a ten-digit +1 number's validity and region."""
    return max(decisive_digits(p, NANP_DIGITS, prefix) for p, prefix in set(nanp_patterns(pn)))
