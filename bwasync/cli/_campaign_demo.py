"""``bwasync demo campaign``: a 10,000-recipient campaign, end to end, on the embedded emulator.

It writes a sample campaign to a temporary directory (a CSV of names and codes with a few
broken rows, and an opt-out list), serves an in-process emulator of Bandwidth with realistic
latency, a rate limit and some failed deliveries, and runs exactly what ``bwasync campaign run
--emulator --callbacks 127.0.0.1:0`` runs: journal, progress bar, delivery receipts, report.
A few recipients (:data:`DEMO_P_STOP_REPLY`) reply STOP once delivered: the reply reaches the
same receiver, is added to the demo's opt-out list, and the report counts the opt-outs received.

The rate limit: the emulated account dequeues :data:`DEMO_DEQUEUE_RATE` segments per second
and the run's ``--rate`` is exactly that, which is what a production campaign should do (set
``--rate`` to the account's limit): the account queue never overflows, so no 429 comes back,
and the progress bar shows the limiter pacing the sends. The queue holds only
:data:`DEMO_QUEUE_SECONDS` of the rate (Bandwidth's holds 15 minutes), so a run *above* the limit
(``bwasync demo campaign --rate 450``) fills it within seconds: Bandwidth-style 429s come back,
the adaptive limiter cuts to the rate the queue accepts and regrows, and every 429'd message is retried and
accepted (the closing line counts the 429s). The default stays at the limit because this
demo is CPU-bound near that rate on a small machine: emulator, client, callback receiver and
journal share one process, and every message costs a send and two status callbacks.
"""

from __future__ import annotations

import csv
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import click
from rich.text import Text

from .._retry import RetryPolicy
from ..campaign import CampaignOptions, load_opt_out
from ._campaign import ProgressMode, RunSettings, progress_mode, run_campaign, run_tuned
from ._demo import demo
from ._options import ConnectionOptions, Session, no_progress_option, rate_option
from ._output import note, out_console

__all__ = ["DEMO_DEQUEUE_RATE", "DEMO_RATE", "DEMO_ROWS", "campaign_demo", "write_sample_campaign"]

#: Recipients in the sample campaign.
DEMO_ROWS: Final = 10_000
#: The emulated account's dequeue rate (segments/s) and queue depth (seconds of it). A queue of
#: a few seconds instead of Bandwidth's 15 minutes makes a rate above the limit show 429s within
#: a short demo.
DEMO_DEQUEUE_RATE: Final = 350.0
DEMO_QUEUE_SECONDS: Final = 2.0
#: The run's --rate: exactly the account's limit (see the module docstring).
DEMO_RATE: Final = DEMO_DEQUEUE_RATE
#: Create latency: 30 ms plus up to 50 ms of jitter, like a nearby Bandwidth data centre.
DEMO_LATENCY: Final = 0.03
DEMO_JITTER: Final = 0.05
#: Share of recipients whose delivery succeeds (the rest fail with carrier error codes).
DEMO_P_DELIVERED: Final = 0.97
#: Seconds between a message's status events; short, so receipts follow the sends closely.
DEMO_CALLBACK_DELAY: Final = 0.1
#: Share of status callbacks the emulator delivers twice (Bandwidth is at-least-once).
DEMO_P_DUPLICATE: Final = 0.01
#: Share of delivered recipients who reply STOP: the report counts the opt-outs received, and the
#: numbers are added to the demo's opt-out list.
DEMO_P_STOP_REPLY: Final = 0.01
#: In-flight requests of the run.
DEMO_CONCURRENCY: Final = 40
#: Seconds the demo waits for the last delivery receipts.
DEMO_WAIT_DELIVERY: Final = 20.0
DEMO_SEED: Final = 7

#: About 90 characters rendered: one GSM-7 segment, or two in UCS-2 when a name needs it (Zoë).
_TEMPLATE = "Hi {first_name}, your verification code is {code}. Msg&data rates may apply. Reply STOP to opt out."
_FIRST_NAMES = (
    "Ann", "Ben", "Chloé", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kemal", "Lena", "Mo",
    "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Vik", "Wen", "Xavi", "Yara", "Zoë",
)  # fmt: skip


def write_sample_campaign(directory: Path, rows: int, seed: int) -> tuple[Path, Path, dict[str, int]]:
    """Write ``campaign.csv`` (id, to, first_name, code) and ``stop.txt``; return them and what is in them.

    A few rows are broken on purpose (two numbers that are not E.164, a text over 2048
    characters, a duplicate id), two recipients are on the opt-out list, and some names (Zoë, Chloé...) need UCS-2 while
    the rest is GSM-7, so the report has something to show.
    """
    rng = random.Random(seed)
    csv_path = directory / "campaign.csv"
    stop_path = directory / "stop.txt"
    broken = {rows // 7: "to", rows // 3: "long", rows // 2: "duplicate", (rows * 4) // 5: "zero"}
    opted_out = [rows // 5, (rows * 3) // 4]
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "to", "first_name", "code"])
        for i in range(rows):
            key = f"c{i:06d}"
            to = f"+1919{5550000 + i:07d}"
            name = rng.choice(_FIRST_NAMES)
            code = f"{rng.randrange(1_000_000):06d}"
            kind = broken.get(i)
            if kind == "to":
                to = "919-555-01"  # not E.164: reported with its line number
            elif kind == "long":
                name = "Bartholomew" * 200  # the message would exceed 2048 characters
            elif kind == "duplicate":
                key = "c000001"
            elif kind == "zero":
                to = "+0919555" + to[-4:]  # E.164 numbers never start with 0
            writer.writerow([key, to, name, code])
    with open(stop_path, "w", encoding="utf-8") as f:
        f.write("# numbers that replied STOP\n")
        for i in opted_out:
            number = str(5550000 + i)
            f.write(f"(919) {number[:3]}-{number[3:]}\n")  # written loosely, as opt-out exports are
    return csv_path, stop_path, {"broken": len(broken), "opted_out": len(opted_out)}


@demo.command("campaign", short_help="A 10,000-recipient campaign with delivery tracking, on a local emulator.")
@click.option("--rows", type=click.IntRange(1, 1_000_000), default=DEMO_ROWS, show_default=True, help="Recipients.")
@rate_option(
    f"The run's --rate; above the emulated account's {DEMO_DEQUEUE_RATE:g} segments/s, 429s show the "
    "adaptive limiter at work.",
    default=DEMO_RATE,
)
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True, help="Seed of the sample data and emulator.")
@click.option("--keep", is_flag=True, help="Keep the generated campaign, opt-out list and journal (path printed).")
@no_progress_option
def campaign_demo(rows: int, rate: float, seed: int, keep: bool, no_progress: bool) -> None:
    """Run a sample campaign against an in-process emulator of Bandwidth; nothing leaves this machine.

    Generates 10,000 recipients (with a few invalid rows and two opted-out numbers), serves the
    emulator with 30-80 ms latency, a 350 segments/s rate limit and 3% failed deliveries, sends the campaign
    with a journal, a progress bar and a status-callback receiver on 127.0.0.1 (1% of recipients
    reply STOP to it), waits for the delivery receipts and prints the report. Exit status as 'campaign run'.
    """
    directory = Path(tempfile.mkdtemp(prefix="bwasync-demo-"))
    try:
        csv_path, stop_path, made = write_sample_campaign(directory, rows, seed)
        note(
            f"Sample campaign: {rows:,} recipients in {csv_path} ({made['broken']} broken rows, "
            f"{made['opted_out']} opted out in {stop_path.name})."
        )
        connection = ConnectionOptions(emulator=True).resolve(need_from=False)
        assert connection.application_id is not None
        options = CampaignOptions(
            input_path=str(csv_path),
            application_id=connection.application_id,
            template=_TEMPLATE,
            default_from=connection.from_,
            key_column="id",
            concurrency=DEMO_CONCURRENCY,
            rate=rate,
            retry=RetryPolicy(max_attempts=8),
            opt_out=load_opt_out(stop_path),
            settle=1.0,
        )
        sessions: list[Session] = []
        knobs: dict[str, Any] = {
            "latency": DEMO_LATENCY,
            "jitter": DEMO_JITTER,
            "p_delivered": DEMO_P_DELIVERED,
            "callback_delay": DEMO_CALLBACK_DELAY,
            "p_duplicate_callback": DEMO_P_DUPLICATE,
            "p_stop_reply": DEMO_P_STOP_REPLY,
            "dequeue_rate": DEMO_DEQUEUE_RATE,
            "queue_seconds": DEMO_QUEUE_SECONDS,
            "seed": seed,
            "record": False,
        }
        settings = RunSettings(
            journal_path=str(csv_path) + ".journal",
            callbacks=("127.0.0.1", 0),
            wait_delivery=DEMO_WAIT_DELIVERY,
            progress=ProgressMode.OFF if no_progress else progress_mode(False),
            emulator_knobs=knobs,
            on_session=sessions.append,
            opt_out_path=str(stop_path),
        )
        note(
            f"Emulated account: dequeues {DEMO_DEQUEUE_RATE:g} segments/s, queues {DEMO_QUEUE_SECONDS:g} s of them; "
            f"sending at --rate {rate:g} with {DEMO_CONCURRENCY} requests in flight."
        )
        code = run_tuned(run_campaign(connection, options, settings))
        if sessions and sessions[0].emulator is not None:
            stats = sessions[0].emulator.stats
            out_console().print(
                Text(
                    f"Emulator: {stats.creates:,} create requests, {stats.accepted:,} accepted, "
                    f"{stats.by_status.get(429, 0):,} answered 429 (queue full; retried), "
                    f"{stats.callbacks_sent:,} status callbacks posted "
                    f"({stats.callbacks_duplicated:,} of them twice on purpose), "
                    f"{stats.stop_replies_sent:,} STOP replies posted.",
                    style="dim",
                )
            )
        if keep:
            note(f"Kept {directory} (campaign, opt-out list, journal).")
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    click.get_current_context().exit(code)
