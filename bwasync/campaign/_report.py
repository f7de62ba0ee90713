"""What a campaign did: a summary report and per-row exports, read from the journal.

Usage::

    report = await build_report(journal)
    print(render_text(report))
    Path("report.json").write_text(report.to_json())
    await export_rows_csv(journal, "outcomes.csv")
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, Final, Protocol

import msgspec

from ._records import CampaignInfo, Counts, LatencyStats, RowRecord

__all__ = [
    "EXPORT_COLUMNS",
    "REPORT_FLAGGED",
    "FlaggedNumber",
    "Report",
    "ReportSource",
    "build_report",
    "export_rows_csv",
    "export_rows_json",
    "first_rows",
    "render_text",
]

#: The columns of the per-row exports, in order.
EXPORT_COLUMNS: Final = (
    "key",
    "line",
    "status",
    "recipients",
    "message_id",
    "error",
    "error_code",
    "delivery_status",
    "delivery_error_code",
    "segments",
    "attempts",
    "latency",
)


#: Flagged numbers listed in a report (the count covers them all).
REPORT_FLAGGED: Final = 10


class ReportSource(Protocol):
    """What a report reads: a :class:`~bwasync.campaign.Journal`, or a campaign shared in Redis
    (:class:`bwasync.redis._campaign.SharedCampaign`). Aggregates, and rows in line order."""

    async def flush(self) -> None: ...
    async def campaign_info(self) -> CampaignInfo | None: ...
    async def counts(self) -> Counts: ...
    async def failed_by_error_code(self) -> dict[int | None, int]: ...
    async def delivery_failed_by_error_code(self) -> dict[int | None, int]: ...
    async def latency_stats(self, percentiles: Sequence[float] = (50, 90, 99)) -> LatencyStats: ...
    async def time_span(self) -> tuple[float | None, float | None]: ...
    async def sending_seconds(self) -> float | None: ...
    async def flagged_numbers(self, limit: int) -> tuple[int, list[tuple[int, str, str, str]]]: ...
    def iter_all(self, batch: int = 1000) -> AsyncIterator[RowRecord]: ...
    def rows_with_status(self, status: str, batch: int = 1000) -> AsyncIterator[RowRecord]: ...


async def first_rows(source: ReportSource, status: str, limit: int) -> list[RowRecord]:
    """The first ``limit`` rows with ``status``, in line order (e.g. invalid rows to show)."""
    rows: list[RowRecord] = []
    if limit <= 0:
        return rows
    async for row in source.rows_with_status(status, batch=limit):
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


class FlaggedNumber(msgspec.Struct):
    """A recipient that cannot be a valid number (libphonenumber), sent anyway."""

    line: int
    key: str
    number: str
    reason: str


class Report(msgspec.Struct, kw_only=True):
    """A campaign's outcome. Times are Unix epoch seconds; latencies are seconds.

    Every row is counted once in ``by_status`` (``total`` is their sum); the delivery figures
    count accepted rows with status callbacks: ``delivered`` (every recipient delivered),
    ``delivery_failed`` (a recipient failed), ``awaiting_delivery`` (accepted, no final
    callback yet). A callback for a row that had no accepted message is never a delivery: it is
    counted in ``unmatched_receipts``. Error-code maps have string keys (JSON), ``"none"`` for
    no code. :meth:`to_json` is the CLI's JSON report (schema in the README).
    """

    campaign_id: str | None
    input_path: str | None
    total: int
    by_status: dict[str, int]
    pending: int
    in_flight: int
    accepted: int
    failed: int
    ambiguous: int
    invalid: int
    skipped: int
    delivered: int
    delivery_failed: int
    awaiting_delivery: int
    #: Receipts for rows with no accepted message (invalid, skipped, failed): never deliveries.
    unmatched_receipts: int
    #: STOP-type replies received on the callback URL during runs that opted their sender out.
    opt_outs_received: int = 0
    #: START-type replies received during runs that opted their sender back in.
    opt_ins_received: int = 0
    #: Recipients that cannot be valid numbers, flagged when loaded without ``strict_numbers``
    #: (needs the ``compliance`` extra); the rows were sent as usual.
    numbers_flagged: int = 0
    #: The first of them (:data:`REPORT_FLAGGED`), in line order.
    flagged_numbers: list[FlaggedNumber] = msgspec.field(default_factory=list)
    #: Rows not sent (``failed``), by HTTP status code.
    send_failures_by_code: dict[str, int]
    #: Rows whose delivery failed, by Bandwidth's callback error code.
    delivery_failures_by_code: dict[str, int]
    #: Segments of accepted rows (segments × recipients): what the account was charged against.
    segments: int
    started_at: float | None
    finished_at: float | None
    #: Seconds spent sending, summed over the runs (the time between a run and its resume is
    #: not counted); for a journal of an older version, ``wall_time``.
    duration: float | None
    #: From the first accepted row's send to the last one's answer, pauses between runs included.
    wall_time: float | None
    #: Accepted rows per second over ``duration``. A run may start with one second's burst
    #: (the rate limiter's bucket starts full), so a short run can show more than its rate.
    throughput: float | None
    segments_per_second: float | None
    latency_p50: float | None
    latency_p90: float | None
    latency_p99: float | None
    latency_max: float | None
    latency_mean: float | None

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()


def _codes(counts: dict[int | None, int]) -> dict[str, int]:
    return {("none" if code is None else str(code)): n for code, n in counts.items()}


async def build_report(journal: ReportSource) -> Report:
    """Summarise the journal. Reads aggregates only, so it is cheap at any campaign size."""
    await journal.flush()
    info = await journal.campaign_info()
    counts = await journal.counts()
    send_codes = await journal.failed_by_error_code()
    delivery_codes = await journal.delivery_failed_by_error_code()
    latency = await journal.latency_stats((50, 90, 99))
    started, finished = await journal.time_span()
    sending = await journal.sending_seconds()
    flagged, first_flagged = await journal.flagged_numbers(REPORT_FLAGGED)

    by_status = counts.by_status
    accepted = by_status.get("accepted", 0)
    wall = finished - started if started is not None and finished is not None else None
    duration = sending if sending else wall
    rate = accepted / duration if duration else None
    segment_rate = counts.accepted_segments / duration if duration else None
    delivered = counts.by_delivery.get("delivered", 0)
    delivery_failed = counts.by_delivery.get("failed", 0)

    ambiguous = by_status.get("ambiguous", 0)
    in_flight = by_status.get("in_flight", 0)
    pending = by_status.get("pending", 0)
    return Report(
        campaign_id=info.campaign_id if info else None,
        input_path=info.input_path if info else None,
        total=counts.total,
        by_status=dict(by_status),
        pending=pending,
        in_flight=in_flight,
        accepted=accepted,
        failed=by_status.get("failed", 0),
        ambiguous=ambiguous,
        invalid=by_status.get("invalid", 0),
        skipped=by_status.get("skipped", 0),
        delivered=delivered,
        delivery_failed=delivery_failed,
        awaiting_delivery=max(0, accepted - delivered - delivery_failed),
        unmatched_receipts=counts.unmatched_receipts,
        opt_outs_received=counts.opt_outs_received,
        opt_ins_received=counts.opt_ins_received,
        numbers_flagged=flagged,
        flagged_numbers=[FlaggedNumber(*f) for f in first_flagged],
        send_failures_by_code=_codes(send_codes),
        delivery_failures_by_code=_codes(delivery_codes),
        segments=counts.accepted_segments,
        started_at=started,
        finished_at=finished,
        duration=duration,
        wall_time=wall,
        throughput=rate,
        segments_per_second=segment_rate,
        latency_p50=latency.percentiles.get(50.0),
        latency_p90=latency.percentiles.get(90.0),
        latency_p99=latency.percentiles.get(99.0),
        latency_max=latency.max,
        latency_mean=latency.mean,
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def render_text(report: Report) -> str:
    """The report as plain text, one fact a line (the CLI may render it richer)."""
    lines = [f"Campaign {report.campaign_id or '?'}" + (f" ({report.input_path})" if report.input_path else "")]
    lines.append(f"  rows         {report.total}")
    for label, n in (
        ("accepted", report.accepted),
        ("failed", report.failed),
        ("ambiguous", report.ambiguous),
        ("invalid", report.invalid),
        ("skipped", report.skipped),
        ("in flight", report.in_flight),
        ("pending", report.pending),
    ):
        lines.append(f"  {label:<12} {n}")
    lines.append(f"  segments     {report.segments}")
    lines.append(
        f"  delivery     {report.delivered} delivered, {report.delivery_failed} failed, "
        f"{report.awaiting_delivery} awaiting"
    )
    if report.unmatched_receipts:
        lines.append(f"  unmatched receipts  {report.unmatched_receipts} (for rows with no accepted message)")
    if report.opt_outs_received or report.opt_ins_received:
        lines.append(
            f"  replies      {report.opt_outs_received} opt-outs (STOP), {report.opt_ins_received} opt-ins (START)"
        )
    if report.numbers_flagged:
        lines.append(f"  numbers flagged  {report.numbers_flagged} (cannot be valid; sent anyway)")
        lines.extend(f"    line {f.line} {f.key}: {f.number}: {f.reason}" for f in report.flagged_numbers)
    if report.send_failures_by_code:
        codes = ", ".join(f"{code}: {n}" for code, n in report.send_failures_by_code.items())
        lines.append(f"  not sent by HTTP status     {codes}")
    if report.delivery_failures_by_code:
        codes = ", ".join(f"{code}: {n}" for code, n in report.delivery_failures_by_code.items())
        lines.append(f"  undelivered by error code   {codes}")
    if report.throughput is not None and report.duration is not None:
        lines.append(
            f"  throughput   {report.throughput:.1f} messages/s, {report.segments_per_second or 0:.1f} segments/s "
            f"over {report.duration:.1f} s"
        )
    if report.latency_p50 is not None:
        lines.append(
            f"  latency      p50 {_ms(report.latency_p50)}, p90 {_ms(report.latency_p90)}, "
            f"p99 {_ms(report.latency_p99)}, max {_ms(report.latency_max)}"
        )
    return "\n".join(lines) + "\n"


def _export_values(row: RowRecord) -> dict[str, Any]:
    return {
        "key": row.key,
        "line": row.line,
        "status": row.status,
        "recipients": list(row.recipients),
        "message_id": row.message_id,
        "error": row.error,
        "error_code": row.error_code,
        "delivery_status": row.delivery_status,
        "delivery_error_code": row.delivery_error_code,
        "segments": row.segments,
        "attempts": row.attempts,
        "latency": row.latency,
    }


@contextmanager
def _text_out(out: str | os.PathLike[str] | IO[str]) -> Iterator[IO[str]]:
    if isinstance(out, (str, os.PathLike)):
        with open(out, "w", encoding="utf-8", newline="") as f:
            yield f
    else:
        yield out


async def export_rows_csv(journal: ReportSource, out: str | os.PathLike[str] | IO[str], *, batch: int = 1000) -> int:
    """Write every row's outcome as CSV (:data:`EXPORT_COLUMNS`), in line order; return the count.

    ``out`` is a path or an open text file. Streams page by page; ``recipients`` are joined
    with ``;``; absent values are empty cells.
    """
    count = 0
    with _text_out(out) as f:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        async for row in journal.iter_all(batch=batch):
            values = _export_values(row)
            values["recipients"] = ";".join(row.recipients)
            writer.writerow(["" if values[c] is None else values[c] for c in EXPORT_COLUMNS])
            count += 1
            if count % batch == 0:
                f.write(buffer.getvalue())
                buffer.seek(0)
                buffer.truncate()
        f.write(buffer.getvalue())
    return count


async def export_rows_json(journal: ReportSource, out: str | os.PathLike[str] | IO[str], *, batch: int = 1000) -> int:
    """Write every row's outcome as JSON Lines (one object per row, :data:`EXPORT_COLUMNS` keys,
    ``recipients`` a list, absent values ``null``), in line order; return the count."""
    encoder = msgspec.json.Encoder()
    count = 0
    with _text_out(out) as f:
        chunk: list[str] = []
        async for row in journal.iter_all(batch=batch):
            chunk.append(encoder.encode(_export_values(row)).decode())
            count += 1
            if len(chunk) >= batch:
                f.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            f.write("\n".join(chunk) + "\n")
    return count
