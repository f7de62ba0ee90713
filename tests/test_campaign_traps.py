"""Mistakes a first-time user makes: each stops with its own exit status and a message that says
what to do, before a journal is written and before anything is sent (never "success" with every
row invalid). The emulator is the witness that nothing was sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bwasync.cli import cli
from bwasync.emulator import Emulator

from ._cli import run_cli
from .test_campaign_cli import TEMPLATE, connection, journal_counts, write_campaign

EXIT_USAGE = 2
EXIT_MOSTLY_INVALID = 4


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BW_* variable from the machine; wide output, so messages are not wrapped."""
    for name in [n for n in os.environ if n.startswith("BW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")


def run(path: Path, emu: Emulator | None, *args: str, sender: bool = True) -> Result:
    """``campaign run`` in this process (these traps stop before any event loop is started)."""
    conn = connection(emu) if emu is not None else ["--emulator"]
    if not sender and emu is not None:
        i = conn.index("--from")
        conn = conn[:i] + conn[i + 2 :]
    return CliRunner().invoke(cli, ["campaign", "run", str(path), "--no-progress", *args, *conn])


def nothing_left(path: Path, emu: Emulator | None = None) -> None:
    assert not [p.name for p in path.parent.iterdir() if ".journal" in p.name]
    if emu is not None:
        assert emu.stats.requests == 0


@pytest.mark.parametrize("dry", [False, True])
async def test_a_template_variable_that_is_no_column(tmp_path: Path, emulator: Emulator, dry: bool) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    result = run(path, emulator, "--template", "Hi {nosuch} {name}", *(["--dry-run"] if dry else []))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "the template uses {nosuch}, which is not a column" in result.output
    assert "columns: id, to, name, code" in result.output and "loading" not in result.output
    nothing_left(path, emulator)


@pytest.mark.parametrize("dry", [False, True])
async def test_no_template_and_no_text_column(tmp_path: Path, emulator: Emulator, dry: bool) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    result = run(path, emulator, *(["--dry-run"] if dry else []))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "nothing to send: give the message with --template" in result.output and "'text'" in result.output
    nothing_left(path, emulator)


async def test_no_sender_anywhere_stops_a_run(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    result = run(path, emulator, "--template", TEMPLATE, sender=False)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "no sender: give --from NUMBER (or set BW_NUMBER), or add a 'from' column" in result.output
    nothing_left(path, emulator)


async def test_no_sender_anywhere_lets_a_dry_run_go_on_with_a_warning(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    result = run(path, emulator, "--template", TEMPLATE, "--dry-run", sender=False)
    assert "Warning: no sender" in result.output and "a real run would stop here" in result.output
    assert result.exit_code == 0, result.output
    assert "3 to send, 0 invalid" in result.output  # the rows are checked as if a sender were given
    nothing_left(path, emulator)


async def test_a_binary_file_says_so(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00b\xee\x9dh^\x01\r\n")  # a .xlsx
    result = run(path, emulator, "--template", TEMPLATE)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "not a text file" in result.output and "universal-newline" not in result.output
    nothing_left(path, emulator)


async def test_a_file_that_is_not_utf8_says_so(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes("to,prénom\r\n+15552223333,Zoé\r\n".encode("latin-1"))
    result = run(path, emulator, "--template", "Hi")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "not valid UTF-8" in result.output and "CSV UTF-8" in result.output
    assert "universal-newline" not in result.output
    nothing_left(path, emulator)


async def test_an_undecodable_template_argument_is_a_usage_error(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    # What Python makes of $'hi \xff {name}' from the shell (surrogateescape).
    result = run(path, emulator, "--template", "hi \udcff {name}")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "--template" in result.output and "not UTF-8" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    nothing_left(path, emulator)


async def test_mostly_invalid_rows_exit_4_before_sending(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 2, invalid_at=(0, 1))  # 2 valid rows, 2 invalid: not more than half
    with open(path, "a", encoding="utf-8") as f:
        f.write("bad9,555-0009,Bad,9\n")  # 3 of 5 invalid
    args = ["campaign", "run", str(path), "--template", TEMPLATE, "--no-progress", *connection(emulator)]
    done = await run_cli(*args)
    assert done.code == EXIT_MOSTLY_INVALID, done.err
    assert "3 of 5 rows are invalid (more than half)" in done.err and "--allow-invalid" in done.err
    assert "Nothing was sent; no journal was kept" in done.err and "555-0009" in done.out
    nothing_left(path, emulator)
    dry = run(path, emulator, "--template", TEMPLATE, "--dry-run")  # no event loop: in this process
    assert dry.exit_code == EXIT_MOSTLY_INVALID and "more than half" in dry.output
    done = await run_cli(*args, "--allow-invalid")
    assert done.code == 0, done.err
    assert emulator.stats.requests == 2


def test_a_refused_resume_prints_no_progress_line_and_leaves_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    journal = Path(str(path) + ".journal")
    first = run(path, None, "--template", TEMPLATE)
    assert first.exit_code == 0, first.output
    assert not Path(str(journal) + ".lock").exists()  # a clean exit leaves no lock file
    before = journal_counts(journal)
    again = run(path, None, "--template", "Other {name}")
    assert again.exit_code == EXIT_USAGE
    assert "loading" not in again.output and "rows read" not in again.output
    assert journal_counts(journal) == before
    assert not Path(str(journal) + ".lock").exists()


def test_a_duplicate_key_reads_the_same_in_a_dry_run_and_a_real_run(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 4)
    with open(path, "a", encoding="utf-8") as f:
        f.write("k1,+15559990000,Dup,1\n")
    base = ["--template", TEMPLATE, "--key-column", "id"]
    dry = run(path, None, *base, "--dry-run")
    real = run(path, None, *base)
    assert dry.exit_code == 0 and real.exit_code == 0, (dry.output, real.output)
    wording = "duplicate key 'k1' (first on line 3)"
    assert wording in dry.output and wording in real.output


@pytest.mark.parametrize("dry", [False, True])
def test_a_row_that_cannot_be_validated_is_an_invalid_row(tmp_path: Path, dry: bool) -> None:
    path = tmp_path / "list.csv"
    rows = ["to,name,media", "+15552220001,A,", "+15552220002,B,http://[::1", "+15552220003,C,", "+15552220004,D,"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run(path, None, "--template", "Hi {name}", *(["--dry-run"] if dry else []))
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    # Listed as an invalid row, with its line number and why.
    line_3 = [line for line in result.output.splitlines() if line.strip().startswith("3 ")]
    assert line_3 and "Invalid IPv6 URL" in line_3[0], result.output
    assert ("3 to send, 1 invalid" if dry else "3 sent by this run") in result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [("--rate", "nan"), ("--rate", "inf"), ("--rate", "1e999"), ("--settle", "nan"), ("--max-error-rate", "nan")],
)
async def test_a_number_that_is_not_finite_is_a_usage_error_naming_the_option(
    tmp_path: Path, emulator: Emulator, option: str, value: str
) -> None:
    # click's FloatRange lets NaN through its bounds (and infinity an open one): the run used to
    # load the journal and fail after starting (--rate), or run with a guard that never trips.
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    result = run(path, emulator, "--template", TEMPLATE, option, value)
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"Invalid value for '{option}': '{value}' is not a finite number" in result.output
    nothing_left(path, emulator)


async def test_a_rate_below_one_segment_a_day_is_a_usage_error(tmp_path: Path, emulator: Emulator) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    result = run(path, emulator, "--template", TEMPLATE, "--rate", "1e-300")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Invalid value for '--rate': 1e-300 is below one segment a day (1.16e-05 per second)" in result.output
    nothing_left(path, emulator)


@pytest.mark.parametrize("raced", [False, True], ids=["in-use", "taken-after-the-check"])
async def test_a_callbacks_port_in_use_is_a_usage_error_and_sends_nothing(
    tmp_path: Path, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, raced: bool
) -> None:
    if raced:  # taken between the check and the receiver's start: caught there, after the load
        monkeypatch.setattr("bwasync.cli._campaign._commands.check_callbacks", lambda endpoint: None)
    path = tmp_path / "list.csv"
    write_campaign(path, 3)
    journal = Path(str(path) + ".journal")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = await run_cli(
            "campaign", "run", str(path), "--template", TEMPLATE, "--no-progress",
            "--callbacks", f"127.0.0.1:{port}", *connection(emulator),
        )  # fmt: skip
    assert done.code == EXIT_USAGE, done.err
    assert f"--callbacks: cannot listen on 127.0.0.1:{port}" in done.err
    assert "Nothing was sent" in done.err and "127.0.0.1:0" in done.err
    assert emulator.stats.requests == 0
    if raced:
        assert journal.exists()  # loaded, then stopped before sending
    else:
        assert "loading" not in done.err + done.out  # checked before the file is read
        nothing_left(path)  # no journal: the port is checked before one is opened
    # The same command with a free port runs (resuming the loaded journal, if any).
    done = await run_cli(
        "campaign", "run", str(path), "--template", TEMPLATE, "--no-progress", "--wait-delivery", "0",
        "--callbacks", "127.0.0.1:0", *connection(emulator),
    )  # fmt: skip
    assert done.code == 0, done.err
    assert journal_counts(journal) == {"accepted": 3}


@pytest.mark.parametrize("option", ["--csv", "--json"])
def test_an_export_that_cannot_be_written_names_its_option(tmp_path: Path, option: str) -> None:
    path = tmp_path / "list.csv"
    write_campaign(path, 2)
    assert run(path, None, "--template", TEMPLATE).exit_code == 0
    target = tmp_path / "no such dir" / "out"
    result = CliRunner().invoke(cli, ["campaign", "report", str(path) + ".journal", option, str(target)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"Invalid value for {option}: cannot write {target}: No such file or directory" in result.output
    # "-" is not stdout (the report is printed there): refused, and no file named "-" appears.
    dash = CliRunner().invoke(cli, ["campaign", "report", str(path) + ".journal", option, "-"], catch_exceptions=False)
    assert dash.exit_code == EXIT_USAGE, dash.output
    assert f"Invalid value for {option}: the export goes to a file (stdout carries the report)" in dash.output
    assert not Path("-").exists()


@pytest.mark.parametrize("dry", [False, True])
@pytest.mark.parametrize(("name", "content"), [("list.csv", "id,to,name,code\n"), ("list.jsonl", "\n\n")])
async def test_a_file_without_rows_is_not_a_successful_run(
    tmp_path: Path, emulator: Emulator, name: str, content: str, dry: bool
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    if dry:  # no event loop: in this process
        result = run(path, emulator, "--template", "Hi", "--dry-run")
        code, output = result.exit_code, result.output
    else:
        done = await run_cli("campaign", "run", str(path), "--template", "Hi", "--no-progress", *connection(emulator))
        code, output = done.code, done.out + done.err
    assert code == EXIT_USAGE, output
    assert f"{path} has no rows (a header alone, or no line at all): nothing to send" in output
    assert "Done" not in output
    nothing_left(path, emulator)


@pytest.mark.parametrize("dry", [False, True])
async def test_a_pipe_as_the_file_is_a_usage_error_not_a_hang(tmp_path: Path, emulator: Emulator, dry: bool) -> None:
    # A campaign reads its file more than once: a FIFO blocked the second open for ever (and
    # SIGTERM could not end a thread blocked there).
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    args = ["campaign", "run", str(fifo), "--template", "Hi", "--no-progress", *connection(emulator)]
    try:
        done = await asyncio.wait_for(run_cli(*args, *(["--dry-run"] if dry else [])), 20)
    finally:
        os.close(os.open(fifo, os.O_RDWR))  # frees an open() still waiting for a writer
    assert done.code == EXIT_USAGE, done.err
    assert f"'{fifo}' is not a regular file (a pipe or a device)" in done.err
    nothing_left(fifo, emulator)
