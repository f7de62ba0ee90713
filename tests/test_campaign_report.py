"""Reports and per-row exports, on a hand-built journal with known times and outcomes."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bwasync import MessageRequest
from bwasync._models import encode_request
from bwasync.campaign import (
    EXPORT_COLUMNS,
    Journal,
    NewRow,
    RowStatus,
    build_report,
    export_rows_csv,
    export_rows_json,
    render_text,
)
from bwasync.cli import cli
from bwasync.cli._campaign._render import pct, report_hints

APP = "93de2206-9669-4e07-948d-329f4b722ee2"
SENDER = "+15553332222"
T0 = 1_800_000_000.0


def row(line: int, status: RowStatus = RowStatus.PENDING, *, to: list[str] | None = None, segments: int = 1) -> NewRow:
    recipients = to or [f"+1555{line:07d}"]
    request = MessageRequest(application_id=APP, to=recipients, from_=SENDER, text="hi")
    return NewRow(
        key=str(line),
        line=line,
        status=status,
        recipients=recipients,
        sender=SENDER,
        request=None if status is RowStatus.INVALID else encode_request(request).decode(),
        segments=segments,
        error={RowStatus.INVALID: "to: bad number", RowStatus.SKIPPED: "opted out"}.get(status),
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    """Lines 2-6 accepted (latency 0.1..0.5 s, 2 segments each), 7-8 failed (400, 403), 9 ambiguous,
    10 invalid, 11 skipped, 12 in flight, 13 pending; deliveries: 2-4 delivered, 5 failed 4720.
    Sends span exactly T0 .. T0+10 s."""
    source = tmp_path / "list.csv"
    source.write_text("to\n", encoding="utf-8")
    path = tmp_path / "c.journal"
    async with Journal(path) as j:
        await j.init_campaign(input_path=source, template="hi", campaign_id="camp1")
        await j.add_rows(
            [row(n, segments=2) for n in range(2, 7)]
            + [row(7), row(8), row(9), row(10, RowStatus.INVALID), row(11, RowStatus.SKIPPED), row(12), row(13)]
        )
        for n in range(2, 10):
            await j.mark_in_flight(str(n))
        await j.mark_in_flight("12")
        for n in range(2, 7):
            j.record_result(str(n), status="accepted", message_id=f"m-{n}", attempts=1, latency=(n - 1) / 10)
        j.record_result("7", status="failed", error="HTTP 400 request-validation", error_code=400, attempts=1)
        j.record_result("8", status="failed", error="HTTP 403 forbidden", error_code=403, attempts=1)
        j.record_result("9", status="ambiguous", error="read timeout", attempts=1)
        for n in (2, 3, 4):
            await j.record_delivery(f"camp1:{n}", "message-delivered", message_id=f"m-{n}")
        await j.record_delivery("camp1:5", "message-failed", error_code=4720, message_id="m-5")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE rows SET in_flight_at = ? WHERE status = 'accepted'", (T0,))
        conn.execute("UPDATE rows SET finished_at = ? WHERE status = 'accepted'", (T0 + 10,))
    conn.close()
    async with Journal(path) as j:
        yield j


async def test_report_numbers(journal: Journal) -> None:
    report = await build_report(journal)
    assert report.campaign_id == "camp1"
    assert report.total == 12
    assert (report.accepted, report.failed, report.ambiguous, report.invalid, report.skipped) == (5, 2, 1, 1, 1)
    assert (report.in_flight, report.pending) == (1, 1)
    assert sum(report.by_status.values()) == report.total
    assert (report.delivered, report.delivery_failed, report.awaiting_delivery) == (3, 1, 1)
    assert report.send_failures_by_code == {"400": 1, "403": 1}
    assert report.delivery_failures_by_code == {"4720": 1}
    assert report.segments == 10
    assert report.duration == pytest.approx(10.0)
    assert report.throughput == pytest.approx(0.5)
    assert report.segments_per_second == pytest.approx(1.0)
    assert (report.latency_p50, report.latency_p90, report.latency_p99) == (0.3, 0.5, 0.5)
    assert report.latency_max == 0.5 and report.latency_mean == pytest.approx(0.3)
    hints = report_hints(report)
    assert hints[0].startswith("1 row is ambiguous") and "--retry-ambiguous" in hints[0]
    assert hints[1].startswith("1 row was in flight")
    assert hints[2].startswith("1 row is still pending")


async def test_report_json_and_text(journal: Journal) -> None:
    report = await build_report(journal)
    data = json.loads(report.to_json())
    assert data["accepted"] == 5 and data["delivery_failures_by_code"] == {"4720": 1}
    text = render_text(report)
    assert "Campaign camp1" in text
    assert "  accepted     5\n" in text
    assert "not sent by HTTP status     400: 1, 403: 1" in text
    assert "undelivered by error code   4720: 1" in text
    assert "throughput   0.5 messages/s, 1.0 segments/s over 10.0 s" in text
    assert "p50 300 ms, p90 500 ms, p99 500 ms, max 500 ms" in text


async def test_no_hint_when_everything_is_settled(tmp_path: Path) -> None:
    source = tmp_path / "list.csv"
    source.write_text("to\n", encoding="utf-8")
    async with Journal(tmp_path / "c.journal") as j:
        await j.init_campaign(input_path=source, template=None)
        await j.add_rows([row(2)])
        await j.mark_in_flight("2")
        j.record_result("2", status="accepted", message_id="m-2", latency=0.2)
        report = await build_report(j)  # flushes the queued result itself
    assert report.accepted == 1 and report_hints(report) == []


async def test_export_csv(journal: Journal, tmp_path: Path) -> None:
    out = tmp_path / "outcomes.csv"
    assert await export_rows_csv(journal, out, batch=5) == 12
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [r["line"] for r in rows] == [str(n) for n in range(2, 14)]
    by_key = {r["key"]: r for r in rows}
    assert by_key["2"]["status"] == "accepted" and by_key["2"]["message_id"] == "m-2"
    assert by_key["2"]["delivery_status"] == "delivered" and by_key["2"]["latency"] == "0.1"
    assert by_key["5"]["delivery_status"] == "failed" and by_key["5"]["delivery_error_code"] == "4720"
    assert by_key["7"]["error_code"] == "400" and by_key["7"]["error"] == "HTTP 400 request-validation"
    assert by_key["10"]["status"] == "invalid" and by_key["10"]["error"] == "to: bad number"
    assert by_key["13"]["message_id"] == "" and by_key["13"]["recipients"] == "+15550000013"


async def test_export_json_lines(journal: Journal) -> None:
    out = io.StringIO()
    assert await export_rows_json(journal, out, batch=5) == 12
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 12 and list(records[0]) == list(EXPORT_COLUMNS)
    assert records[0]["recipients"] == ["+15550000002"] and records[0]["segments"] == 2
    assert records[-1]["status"] == "pending" and records[-1]["message_id"] is None


async def test_load_send_and_report_flow(tmp_path: Path) -> None:
    """The runner's flow end to end, on the foundations alone (no HTTP): file -> journal -> report."""
    from bwasync.campaign import Template, load_opt_out, prepare_row, read_rows

    source = tmp_path / "list.csv"
    source.write_text(
        "id,to,first_name\n"
        "a,+15550000001,Ann\n"
        "b,+15550000002;+15550000003,Bob\n"
        "c,+15550000004,\n"  # empty first_name renders as ""
        "d,not-a-number,Dan\n"
        "e,+15550000009,Eve\n"
        "a,+15550000005,Dup\n",
        encoding="utf-8",
    )
    stop = tmp_path / "stop.txt"
    stop.write_text("555-000-0009\n", encoding="utf-8")
    template = Template("Hi {first_name}!")
    async with Journal(tmp_path / "c.journal") as j:
        info = await j.init_campaign(input_path=source, template=template.source, settings={"rate": 5})
        opt_out = load_opt_out(stop)
        batch = [
            prepare_row(
                r,
                template=template,
                application_id=APP,
                default_from=SENDER,
                campaign_id=info.campaign_id,
                opt_out=opt_out,
            )
            for r in read_rows(source, key_column="id")
        ]
        await j.add_rows(batch, loaded_through=batch[-1].line)
        await j.set_loaded_through(batch[-1].line, complete=True)
        async for pending in j.iter_pending():
            request = pending.message_request()
            assert request.tag == f"{info.campaign_id}:{pending.key}"
            await j.mark_in_flight(pending.key)  # what before_send does
            j.record_result(pending.key, status="accepted", message_id=f"m-{pending.key}", attempts=1, latency=0.05)
        report = await build_report(j)
    assert (report.accepted, report.invalid, report.skipped, report.pending) == (3, 2, 1, 0)
    assert report.segments == 4  # the group row costs one segment per recipient
    assert report_hints(report) == []


#: ``campaign report --format json``: the documented schema (README, "Reading a campaign from a script").
REPORT_KEYS = {
    "campaign_id", "input_path", "total", "by_status", "pending", "in_flight", "accepted", "failed", "ambiguous",
    "invalid", "skipped", "delivered", "delivery_failed", "awaiting_delivery", "unmatched_receipts",
    "opt_outs_received", "opt_ins_received", "numbers_flagged", "flagged_numbers", "send_failures_by_code",
    "delivery_failures_by_code", "segments",
    "started_at", "finished_at", "duration",
    "wall_time", "throughput", "segments_per_second", "latency_p50", "latency_p90", "latency_p99", "latency_max",
    "latency_mean",
}  # fmt: skip
#: ``campaign status --format json``.
STATUS_KEYS = {
    "path", "campaign_id", "input_path", "template", "settings", "created_at", "loaded_through", "load_complete",
    "total", "by_status", "by_delivery", "accepted_segments", "updated_at", "last_activity", "unmatched_receipts",
    "done", "complete", "held", "held_until",
}  # fmt: skip


async def test_throughput_counts_the_time_spent_sending_not_the_pause_between_runs(journal: Journal) -> None:
    await journal.begin_sending()
    conn = sqlite3.connect(journal.path)
    with conn:
        # Two runs of 5 s each, a day apart: 10 s of sending in a 24-hour span.
        conn.execute("DELETE FROM sending")
        conn.execute(
            "INSERT INTO sending (started_at, last_at) VALUES (?, ?), (?, ?)", (T0, T0 + 5, T0 + 86_400, T0 + 86_405)
        )
        conn.execute("UPDATE rows SET finished_at = ? WHERE key = '6'", (T0 + 86_405,))
    conn.close()
    report = await build_report(journal)
    assert report.duration == pytest.approx(10.0) and report.wall_time == pytest.approx(86_405.0)
    assert report.throughput == pytest.approx(0.5)  # 5 accepted rows over 10 s, not over a day


def test_report_and_status_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BW_ACCOUNT_ID", "BW_USERNAME", "BW_PASSWORD", "BW_APPLICATION_ID", "BW_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "list.csv"
    path.write_text("to,name\n+15552220001,Ann\n+15552220002,Bob\n+15552220003,Cy\n", encoding="utf-8")
    journal = str(path) + ".journal"
    runner = CliRunner()  # result.stdout is stdout alone
    done = runner.invoke(cli, ["campaign", "run", str(path), "--template", "Hi {name}", "--emulator", "--no-progress"])
    assert done.exit_code == 0, done.output
    result = runner.invoke(cli, ["campaign", "report", journal, "--format", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert set(data) == REPORT_KEYS
    assert (data["total"], data["accepted"], data["by_status"]["accepted"]) == (3, 3, 3)
    assert data["throughput"] > 0 and data["duration"] > 0 and data["latency_p50"] is not None
    result = runner.invoke(cli, ["campaign", "status", journal, "--format", "json"])
    assert result.exit_code == 0
    status = json.loads(result.stdout)
    assert set(status) == STATUS_KEYS
    assert status["complete"] is True and status["done"] == 3 and status["campaign_id"] == data["campaign_id"]


@pytest.mark.parametrize("command", ["status", "report"])
def test_a_directory_given_as_the_journal_is_named_as_such(tmp_path: Path, command: str) -> None:
    result = CliRunner().invoke(cli, ["campaign", command, str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path}: is a directory, not a campaign journal" in " ".join(result.output.split())  # wrapped
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["campaign", command, str(tmp_path / "nope.journal")])
    assert missing.exit_code == 2 and "no such journal" in missing.output


def test_a_share_that_is_neither_none_nor_all_never_reads_as_0_or_100_percent() -> None:
    assert pct(4, 10_000) == "<0.1%"  # the demo's invalid rows read "0.0%" before
    assert pct(9_996, 10_000) == ">99.9%"
    assert pct(0, 10_000) == "0.0%" and pct(10_000, 10_000) == "100.0%"
    assert pct(5, 10_000) == "0.1%" and pct(9_994, 10_000) == "99.9%"
    assert pct(1, 0) == ""
