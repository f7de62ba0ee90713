"""Compliance inside a campaign run: STOP/START replies received mid-run, impossible numbers.

The run sends to the in-process emulator on 127.0.0.1 and keeps a real journal; replies are
POSTed to the run's real callback receiver, exactly as Bandwidth posts them.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from bwasync import MessageRequest
from bwasync.campaign import CallbackReceiver, CampaignRunner, build_report, load_opt_out
from bwasync.campaign._receiver import campaign_event_handler
from bwasync.compliance import FileOptOutStore, ReplyProcessor
from bwasync.emulator import Emulator

from .test_campaign_run import client_for, number, options, statuses
from .test_compliance_replies import inbound

USER, PASSWORD = "bw", "reply-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
#: The handset that replies STOP mid-run, and the one that replies START (it was on the list).
STOPPER, STARTER = number(1), number(2)


def write_repeating_csv(path: Path, rows: int) -> Path:
    """Rows to numbers 0..4 in turn, so each number has rows early and late in the file."""
    lines = [f"k{i},{number(i % 5)},Ann{i},{i:04d}\n" for i in range(rows)]
    path.write_text("id,to,name,code\n" + "".join(lines), encoding="utf-8")
    return path


class ReplyWhileSending(CampaignRunner):
    """Posts ``bodies`` to the receiver right before the row ``at`` is sent (one row at a time)."""

    def __init__(self, *args: Any, at: str, bodies: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at, self.bodies = at, bodies
        self.url: str | None = None
        self.answers: list[int] = []

    async def _before_send(self, index: int, request: MessageRequest) -> None:
        if self._keys.get(index) == self.at and not self.answers:
            assert self.url is not None
            async with aiohttp.ClientSession() as session:
                for body in self.bodies:
                    async with session.post(self.url, json=body, headers=AUTH) as resp:
                        self.answers.append(resp.status)
        await super()._before_send(index, request)


async def test_stop_and_start_received_mid_campaign(tmp_path: Path, emulator: Emulator) -> None:
    path = write_repeating_csv(tmp_path / "list.csv", 40)
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text(f"{STARTER}\n", encoding="utf-8")
    journal = tmp_path / "j"
    stop = inbound("Stop", message_id="in-stop", sender=STOPPER, time="2026-12-02T03:00:00.000Z")
    start = inbound("START", message_id="in-start", sender=STARTER, time="2026-12-02T03:00:01.000Z")
    again = inbound("STOP", message_id="in-stop-2", sender=STOPPER, time="2026-12-02T03:00:02.000Z")
    # The STOP, then Bandwidth's retry of it (same event), a START, and a second STOP that
    # changes nothing (already out).
    bodies = [[stop], [stop], [start], [again]]
    opts = options(path, key_column="id", concurrency=1, opt_out=load_opt_out(stop_file))
    runner = ReplyWhileSending(journal, opts, at="k13", bodies=bodies)
    async with runner:
        await runner.load()
        replies = ReplyProcessor(FileOptOutStore(stop_file), on_reply=runner.receive_reply)
        on_event = campaign_event_handler(runner.journal, replies.apply)
        async with CallbackReceiver("127.0.0.1", 0, on_event=on_event, username=USER, password=PASSWORD) as rx:
            runner.url = rx.url
            async with client_for(emulator) as client:
                outcome = await runner.run(client)
            assert rx.stats.duplicates == 1  # the retried STOP was dropped at the door
        counts = await runner.journal.counts()
        assert runner.progress.by_status == dict(counts.by_status)  # live counters agree
        report = await build_report(runner.journal)
    assert runner.answers == [200, 200, 200, 200]
    assert outcome.complete
    states = statuses(journal)
    # The stopper's rows up to the reply were sent (k1, k6, k11); every later one was skipped.
    sent_to_stopper = sorted(m.tag.split(":")[1] for m in emulator.accepted if m.to == [STOPPER] and m.tag)
    assert sent_to_stopper == ["k1", "k11", "k6"]
    assert all(states[f"k{i}"] == "skipped" for i in range(16, 40, 5))
    # The START re-subscribed the number for later campaigns (the --opt-out file) but does not
    # bring back rows this campaign skipped at load.
    assert STARTER not in load_opt_out(stop_file) and STOPPER in load_opt_out(stop_file)
    assert all(states[f"k{i}"] == "skipped" for i in range(2, 40, 5))
    assert counts["skipped"] == 8 + 5 and counts["accepted"] == 40 - 13
    assert (report.opt_outs_received, report.opt_ins_received) == (1, 1)


async def test_a_reply_applied_twice_across_runs_skips_once(tmp_path: Path) -> None:
    """Bandwidth retries for a day, so a STOP can come again to a later run's receiver."""
    path = write_repeating_csv(tmp_path / "list.csv", 10)
    journal = tmp_path / "j"
    async with CampaignRunner(journal, options(path, key_column="id")) as runner:
        await runner.load()
        first = await runner.journal.record_reply("in-9", STOPPER, "opt-out", changed=True)
    async with CampaignRunner(journal, options(path, key_column="id")) as runner:
        await runner.load()
        second = await runner.journal.record_reply("in-9", STOPPER, "opt-out", changed=True)
        counts = await runner.journal.counts()
    assert (first, second) == (2, 0)
    assert counts["skipped"] == 2 and counts.opt_outs_received == 1
    conn = sqlite3.connect(journal)
    try:
        assert conn.execute("SELECT number, skipped FROM replies").fetchall() == [(STOPPER, 2)]
    finally:
        conn.close()
