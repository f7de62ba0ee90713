"""Checks a campaign passes before anything is written or sent: mistakes that would make every row fail.

A template variable that is no column, a file with nothing to send, no sender anywhere: each
would load every row as invalid and "succeed" with nothing sent. :func:`preflight` finds them
from the file's columns alone (a CSV header, the keys of the first JSON Lines records), in
milliseconds, and returns them as :class:`Problem` s for a front end to word.

:func:`mostly_invalid` is the same idea after the load: more than half of the rows invalid is
more likely a wrong file or option than a few bad rows.
"""

from __future__ import annotations

import enum
import os
from typing import Final, NamedTuple

from ._inputs import Format, Template, read_rows

__all__ = ["JSONL_SAMPLE", "Problem", "ProblemKind", "file_columns", "mostly_invalid", "preflight"]

#: JSON Lines records whose keys stand for the file's columns (a JSONL file has no header; a
#: key used by no record among the first thousand is taken for absent).
JSONL_SAMPLE: Final = 1000
#: The share of invalid rows above which a run is "mostly invalid".
MOSTLY_INVALID: Final = 0.5


class ProblemKind(enum.StrEnum):
    """``unknown_variables``: the template uses ``names`` that are no column, so every row
    would miss them; ``nothing_to_send``: no template and no ``text`` nor ``media`` column;
    ``no_sender``: no default sender and no ``from`` column."""

    UNKNOWN_VARIABLES = "unknown_variables"
    NOTHING_TO_SEND = "nothing_to_send"
    NO_SENDER = "no_sender"


class Problem(NamedTuple):
    """One reason every row would fail (see :class:`ProblemKind`)."""

    kind: ProblemKind
    #: The names concerned (the unknown variables), sorted.
    names: tuple[str, ...] = ()
    #: The file's columns, for the message.
    columns: tuple[str, ...] = ()


def file_columns(path: str | os.PathLike[str], *, fmt: Format | None = None) -> tuple[str, ...]:
    """The CSV header, or the keys of the first :data:`JSONL_SAMPLE` JSON Lines records.

    Raises :class:`~bwasync.campaign.InputFileError` when the file itself is unusable.
    """
    with read_rows(path, fmt=fmt, track_duplicates=False) as reader:
        if reader.columns is not None:
            return reader.columns
        seen: dict[str, None] = {}
        for n, row in enumerate(reader):
            seen.update(dict.fromkeys(row.fields))
            if n + 1 >= JSONL_SAMPLE:
                break
        return tuple(seen)


def preflight(columns: tuple[str, ...], *, template: Template | None, default_from: str | None) -> list[Problem]:
    """What would make every row of a file with ``columns`` invalid (pure; empty list: none)."""
    problems: list[Problem] = []
    present = frozenset(columns)
    if template is not None:
        unknown = template.variables - present
        if unknown:
            problems.append(Problem(ProblemKind.UNKNOWN_VARIABLES, tuple(sorted(unknown)), columns))
    elif not present & {"text", "media"}:
        problems.append(Problem(ProblemKind.NOTHING_TO_SEND, (), columns))
    if default_from is None and "from" not in present:
        problems.append(Problem(ProblemKind.NO_SENDER, (), columns))
    return problems


def mostly_invalid(invalid: int, total: int) -> bool:
    """Whether more than :data:`MOSTLY_INVALID` of ``total`` rows are invalid."""
    return total > 0 and invalid > MOSTLY_INVALID * total
