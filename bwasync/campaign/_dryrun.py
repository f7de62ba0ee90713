"""A dry run: every row validated and rendered, nothing sent, nothing written.

:func:`dry_run` streams the input file through the load pass's own row check
(:func:`~bwasync.campaign.prepare_row`: keys, the template, Bandwidth's rules, the opt-out
list, numbers and time zones) and keeps only counters, the first few messages and the first
few invalid rows, so a million-row file costs no more memory than a ten-row one::

    report = dry_run("list.csv", template=Template("Hi {first_name}"), application_id=APP,
                     default_from="+15553332222")
    print(report.valid, report.invalid, report.total_segments, report.duration(rate=50))
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from .._segments import segments, total_segments
from .._validation import Priority
from ..compliance import QuietHours
from ._inputs import Format, Template, flag_errors, format_field_errors, prepare_row, read_rows
from ._rowstate import RowStatus

__all__ = ["DryRunInvalid", "DryRunMessage", "DryRunReport", "dry_run"]

#: Campaign id used in tags when none is given (tags do not change segments or validity).
DRY_RUN_CAMPAIGN_ID = "dry-run"


class _Content(msgspec.Struct):
    """What the dry run shows of a row's request body, the one the load pass would store."""

    sender: str = msgspec.field(name="from")
    text: str | None = None
    media: list[str] | None = None


_content = msgspec.json.Decoder(_Content)


@dataclass(frozen=True, slots=True)
class DryRunMessage:
    """One rendered message, as it would be sent."""

    line: int
    key: str
    to: tuple[str, ...]
    sender: str
    text: str | None
    media: int
    encoding: str
    #: Segments of one copy (1 for MMS).
    segments: int

    @property
    def cost(self) -> int:
        """Segments counted against the rate: segments × recipients."""
        return total_segments(self.segments, len(self.to))


@dataclass(frozen=True, slots=True)
class DryRunInvalid:
    """A row that would not be sent, and why."""

    line: int
    key: str
    error: str


@dataclass(slots=True)
class DryRunReport:
    """What a campaign would send (see :func:`dry_run`)."""

    rows: int = 0
    valid: int = 0
    invalid: int = 0
    #: Valid rows with an opted-out recipient (never sent).
    skipped: int = 0
    gsm7: int = 0
    ucs2: int = 0
    mms: int = 0
    recipients: int = 0
    #: Segments per message (one copy) -> messages.
    histogram: collections.Counter[int] = field(default_factory=collections.Counter)
    #: Segments counted against the account's rate: Σ segments × recipients over sendable rows.
    total_segments: int = 0
    #: The first rendered messages, in file order.
    sample: list[DryRunMessage] = field(default_factory=list)
    #: The first invalid rows, in file order (``invalid`` counts them all).
    invalid_rows: list[DryRunInvalid] = field(default_factory=list)
    #: Whether recipients were checked for numbers that cannot exist (``check_numbers``).
    numbers_checked: bool = False
    #: Sendable rows with a recipient that cannot be a valid number (sent anyway, unless
    #: ``strict_numbers``, which counts them in ``invalid`` instead).
    impossible: int = 0
    #: The first of those rows, in file order, with the reason.
    impossible_rows: list[DryRunInvalid] = field(default_factory=list)
    #: Sendable rows quiet hours would hold if the run started now (``quiet_hours``).
    held: int = 0
    #: When the first of them may go (None: none held, or none ever may).
    held_until: datetime | None = None

    @property
    def sendable(self) -> int:
        return self.valid - self.skipped

    def duration(self, rate: float | None) -> float | None:
        """Seconds to send everything at ``rate`` segments per second (None without a rate)."""
        if rate is None or rate <= 0:
            return None
        return self.total_segments / rate


def dry_run(
    path: str | os.PathLike[str],
    *,
    template: Template | None,
    application_id: str,
    default_from: str | None,
    key_column: str | None = None,
    fmt: Format | None = None,
    campaign_id: str | None = None,
    opt_out: Collection[str] = frozenset(),
    priority: Priority | str | None = None,
    expiration: datetime | str | None = None,
    sample: int = 20,
    max_invalid: int = 50,
    check_numbers: bool = False,
    strict_numbers: bool = False,
    quiet_hours: QuietHours | None = None,
    timezone_column: str | None = None,
    now: datetime | None = None,
) -> DryRunReport:
    """Validate and render every row of ``path``; send nothing, write nothing.

    ``check_numbers`` flags recipients that cannot be valid numbers (``impossible``, with the
    reason); ``strict_numbers`` makes those rows invalid, as ``campaign run --strict-numbers``
    does. ``quiet_hours`` counts the rows it would hold at ``now`` (default: the current time)
    and when the first may go (zones from ``timezone_column`` where a row gives one, else from
    its numbers; an unknown zone makes the row invalid). These need the ``compliance`` extra.

    Raises :class:`~bwasync.campaign.InputFileError` when the file itself is unusable. Rows are
    keyed and checked exactly as the load pass does (:func:`~bwasync.campaign.build_request`);
    duplicate keys are invalid.
    """
    report = DryRunReport(numbers_checked=check_numbers or strict_numbers)
    at = now or datetime.now(UTC)
    # The load pass's own verdict on every row: invalid, skipped, or sent (and flagged).
    prepare = functools.partial(
        prepare_row,
        template=template,
        application_id=application_id,
        default_from=default_from,
        campaign_id=campaign_id or DRY_RUN_CAMPAIGN_ID,
        opt_out=frozenset(opt_out),
        priority=priority,
        expiration=expiration,
        strict_numbers=strict_numbers,
        flag_numbers=check_numbers,
        timezone_column=timezone_column,
    )
    with read_rows(path, fmt=fmt, key_column=key_column) as reader:
        for row in reader:
            report.rows += 1
            new = prepare(row)
            if new.status is RowStatus.INVALID:
                report.invalid += 1
                if len(report.invalid_rows) < max_invalid:
                    report.invalid_rows.append(DryRunInvalid(row.line, row.key, new.error or ""))
                continue
            if new.flagged:
                report.impossible += 1
                if len(report.impossible_rows) < max_invalid:
                    error = format_field_errors(flag_errors(new.flagged))
                    report.impossible_rows.append(DryRunInvalid(row.line, row.key, error))
            report.valid += 1
            if new.status is RowStatus.SKIPPED:
                report.skipped += 1
                continue
            to = new.recipients
            if quiet_hours is not None:
                check = quiet_hours.check((new.zone,), at) if new.zone else quiet_hours.check_numbers(to, at)
                if not check.allowed:
                    report.held += 1
                    if check.next_allowed and (report.held_until is None or check.next_allowed < report.held_until):
                        report.held_until = check.next_allowed
            assert new.request is not None  # a row that is not invalid carries its request
            content = _content.decode(new.request)
            info = segments(content.text, content.media)
            if content.media:
                report.mms += 1
            elif info.encoding == "GSM-7":
                report.gsm7 += 1
            else:
                report.ucs2 += 1
            report.histogram[info.segments] += 1
            report.recipients += len(to)
            report.total_segments += new.segments
            if len(report.sample) < sample:
                report.sample.append(
                    DryRunMessage(
                        line=row.line,
                        key=row.key,
                        to=tuple(to),
                        sender=content.sender,
                        text=content.text,
                        media=len(content.media or ()),
                        encoding="MMS" if content.media else info.encoding,
                        segments=info.segments,
                    )
                )
    return report
