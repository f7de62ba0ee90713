"""The ``bwasync`` command line: arguments, environment, output and exit codes.

Most tests drive the click commands in-process with ``CliRunner``; those that need a server
point ``--base-url`` at an emulator running on its own loop in a background thread (the
command runs its own loop, as it does for a user). The subprocess tests at the end run the
installed ``bwasync`` script and ``python -m bwasync.cli`` exactly as a user types them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.core import ParameterSource
from click.testing import CliRunner, Result

from bwasync._models import Message, decode_callbacks
from bwasync.cli import cli
from bwasync.cli._constants import EMULATOR_ACCOUNT_ID, EMULATOR_APPLICATION_ID, EMULATOR_NUMBER
from bwasync.cli._demo import DEFAULT_DEMO, EXAMPLES, demo
from bwasync.cli._loop import loop_factory, run
from bwasync.cli._options import ConnectionOptions, connection_options
from bwasync.cli._receiver import CallbackCollector, expected_callbacks
from bwasync.cli._segments_cmd import analyse
from bwasync.emulator import Emulator

BW_VARS = (
    "BW_ACCOUNT_ID",
    "BW_USERNAME",
    "BW_PASSWORD",
    "BW_CLIENT_ID",
    "BW_CLIENT_SECRET",
    "BW_TOKEN_URL",
    "BW_MESSAGING_URL",
    "BW_APPLICATION_ID",
    "BW_NUMBER",
)
ACCOUNT = "9900001"
APP_ID = "93de2206-9669-4e07-948d-329f4b722ee2"
FROM = "+15553332222"
TO = "+15552223333"
BIN = Path(sys.executable).parent
# Generous: a CI machine may be slow to import; nothing waits this long when things work.
PROCESS_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Bandwidth settings leak in from the developer's shell."""
    for name in BW_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("BWASYNC_LOOP", raising=False)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


class ThreadedEmulator:
    """An emulator serving from its own event loop in a background thread."""

    def __init__(self, **knobs: Any) -> None:
        self._knobs = knobs
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.emu: Emulator | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with Emulator(**self._knobs) as emu:
                self.emu = emu
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self._ready.set()

    def start(self) -> Emulator:
        self._thread.start()
        assert self._ready.wait(PROCESS_TIMEOUT), "emulator did not start"
        if self.error is not None:
            raise self.error
        assert self.emu is not None
        return self.emu

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(PROCESS_TIMEOUT)


@pytest.fixture
def server() -> Iterator[Emulator]:
    threaded = ThreadedEmulator(username="u", password="p", account_id=ACCOUNT)
    emu = threaded.start()
    try:
        yield emu
    finally:
        threaded.stop()


def server_env(emu: Emulator, **overrides: str) -> dict[str, str]:
    env = {
        "BW_MESSAGING_URL": emu.url,
        "BW_ACCOUNT_ID": ACCOUNT,
        "BW_USERNAME": "u",
        "BW_PASSWORD": "p",
        "BW_APPLICATION_ID": APP_ID,
        "BW_NUMBER": FROM,
    }
    env.update(overrides)
    return env


def invoke(runner: CliRunner, *args: str, **kwargs: Any) -> Result:
    return runner.invoke(cli, list(args), catch_exceptions=False, **kwargs)


# --- help and version ------------------------------------------------------------------------


def test_help_describes_bwasync_and_lists_every_command(runner: CliRunner) -> None:
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    out = result.output
    assert "Bandwidth's Messaging V2 API" in out
    commands = out.split("Commands:")[1]
    for name in ("send", "segments", "demo", "emulator", "campaign"):
        assert f"\n  {name} " in commands
    assert "Send one SMS or MMS" in commands  # one-line summaries, not truncated docstrings
    assert "Examples:" in out and "bwasync send --emulator" in out
    assert "-h, --help" in out and "-v, --verbose" in out


def test_version_names_the_package_version_and_loop(runner: CliRunner) -> None:
    from bwasync import __version__

    result = invoke(runner, "--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"bwasync {__version__} (Python ")
    assert "loop " in result.output


def test_send_help_shows_every_environment_variable(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--help")
    assert result.exit_code == 0
    assert result.output.count("env var:") == len(BW_VARS)
    for var in BW_VARS:
        assert var in result.output
    for flag in ("--account-id", "--username", "--password", "--client-id", "--client-secret", "--base-url"):
        assert flag in result.output
    assert "--application-id" in result.output and "--from" in result.output and "--emulator" in result.output


def test_campaign_group_has_its_commands(runner: CliRunner) -> None:
    from bwasync.cli._campaign import campaign

    assert list(campaign.commands) == ["run", "status", "report"]
    result = invoke(runner, "campaign", "--help")
    assert result.exit_code == 0
    for name in ("run", "status", "report"):
        assert name in result.output


def test_verbose_turns_on_debug_logging_for_bwasync(runner: CliRunner) -> None:
    logger = logging.getLogger("bwasync")
    level, handlers = logger.level, list(logger.handlers)
    try:
        result = invoke(runner, "-v", "segments", "hi")
        assert result.exit_code == 0
        assert logger.level == logging.DEBUG
        assert len(logger.handlers) == len(handlers) + 1
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_loop_factory_prefers_uvloop_unless_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory() is uvloop.new_event_loop
    monkeypatch.setenv("BWASYNC_LOOP", "asyncio")
    assert loop_factory() is None


# --- shared options: missing values, environment fallbacks --------------------------------------


def test_missing_options_name_both_the_flag_and_the_variable(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--to", TO, "--text", "hi")
    assert result.exit_code == 2
    err = result.stderr
    assert "Missing --account-id (or set BW_ACCOUNT_ID)" in err
    assert "Missing --application-id (or set BW_APPLICATION_ID)" in err
    assert "Missing --from (or set BW_NUMBER)" in err
    assert "--username and --password (or set BW_USERNAME and BW_PASSWORD)" in err
    assert "--client-id and --client-secret (or set BW_CLIENT_ID and BW_CLIENT_SECRET)" in err
    assert "--emulator" in err


def test_half_a_credential_pair_names_the_missing_half(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--to", TO, "--text", "hi", env={"BW_ACCOUNT_ID": ACCOUNT, "BW_USERNAME": "u"})
    assert result.exit_code == 2
    assert "Missing --password (or set BW_PASSWORD)" in result.stderr
    assert "Missing --account-id" not in result.stderr
    result = invoke(runner, "send", "--to", TO, "--text", "hi", "--account-id", ACCOUNT, "--client-secret", "s")
    assert "Missing --client-id (or set BW_CLIENT_ID)" in result.stderr


def options(**values: Any) -> ConnectionOptions:
    sources = {name: ParameterSource.COMMANDLINE for name in values if not name.startswith("env_")}
    plain = {name: value for name, value in values.items() if not name.startswith("env_")}
    for name, value in values.items():
        if name.startswith("env_"):
            plain[name[4:]] = value
            sources[name[4:]] = ParameterSource.ENVIRONMENT
    return ConnectionOptions(**plain, sources=sources)


def test_a_credential_pair_on_the_command_line_beats_one_from_the_environment() -> None:
    conn = options(
        account_id="1",
        application_id="a",
        from_=FROM,
        client_id="cid",
        client_secret="cs",
        env_username="u",
        env_password="p",
    ).resolve()
    assert (conn.client_id, conn.client_secret, conn.username, conn.password) == ("cid", "cs", None, None)
    conn = options(
        account_id="1", application_id="a", from_=FROM, username="u", password="p", env_client_id="c"
    ).resolve()
    assert (conn.username, conn.client_id) == ("u", None)


def test_two_credential_pairs_from_the_same_place_are_an_error() -> None:
    import click

    with pytest.raises(click.UsageError, match="not both"):
        options(
            account_id="1",
            application_id="a",
            from_=FROM,
            env_username="u",
            env_password="p",
            env_client_id="c",
            env_client_secret="s",
        ).resolve()


def test_emulator_mode_needs_nothing_and_fills_in_the_emulator_identity() -> None:
    conn = options(emulator=True).resolve()
    assert conn.emulator
    assert (conn.account_id, conn.application_id, conn.from_) == (
        EMULATOR_ACCOUNT_ID,
        EMULATOR_APPLICATION_ID,
        EMULATOR_NUMBER,
    )
    assert conn.username and conn.password
    assert conn.password not in repr(conn)  # secrets stay out of reprs


def test_emulator_with_an_explicit_base_url_is_a_usage_error(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--emulator", "--base-url", "http://127.0.0.1:9/api/v2", "--to", TO, "--text", "x")
    assert result.exit_code == 2
    assert "--base-url and --emulator" in result.stderr


def test_every_setting_falls_back_to_its_environment_variable(runner: CliRunner, server: Emulator) -> None:
    result = invoke(runner, "send", "--to", TO, "--text", "from the environment", "--json", env=server_env(server))
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["from"] == FROM
    assert body["applicationId"] == APP_ID
    assert body["owner"] == FROM
    [accepted] = server.accepted
    assert (accepted.account_id, accepted.text) == (ACCOUNT, "from the environment")


def test_flags_override_the_environment(runner: CliRunner, server: Emulator) -> None:
    env = server_env(server, BW_NUMBER="+15550000000", BW_PASSWORD="wrong")
    result = invoke(runner, "send", "--to", TO, "--text", "x", "--from", FROM, "--password", "p", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["from"] == FROM


def test_connection_options_are_reusable_by_any_command() -> None:
    import click

    seen: list[Any] = []

    @click.command()
    @click.option("--count", type=int, default=1)
    @connection_options
    def probe(connection: ConnectionOptions, count: int) -> None:
        seen.append((connection.resolve(need_from=False), count))

    result = CliRunner().invoke(
        probe,
        ["--count", "3", "--account-id", "42", "--application-id", "app"],
        env={"BW_CLIENT_ID": "cid", "BW_CLIENT_SECRET": "cs"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    [(conn, count)] = seen
    assert count == 3
    assert (conn.account_id, conn.application_id, conn.client_id, conn.from_) == ("42", "app", "cid", None)
    assert conn.client_kwargs() == {"client_id": "cid", "client_secret": "cs"}
    assert "BW_ACCOUNT_ID]" in CliRunner().invoke(probe, ["--help"]).output


# --- send -------------------------------------------------------------------------------------


def test_send_to_the_in_process_emulator_prints_the_202_with_wire_names(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--emulator", "--to", TO, "--text", "Hello", "--tag", "t-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "202 Accepted" in out
    json_part = json.loads(out[out.index("{") :])
    assert json_part["segmentCount"] == 1
    assert json_part["from"] == EMULATOR_NUMBER
    assert json_part["to"] == [TO]
    assert json_part["tag"] == "t-1"
    assert "from_" not in out and "segment_count" not in out
    assert "emulator" in result.stderr  # the dim note, on stderr


def test_send_json_is_only_the_202_body(runner: CliRunner) -> None:
    result = invoke(
        runner,
        "send",
        "--emulator",
        "--to",
        f"{TO},+15554443333",
        "--text",
        "Group hello",
        "--media",
        "https://example.com/a.jpg",
        "--priority",
        "high",
        "--json",
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) >= {"id", "owner", "applicationId", "time", "segmentCount", "direction", "to", "from"}
    assert body["to"] == [TO, "+15554443333"]  # comma-separated --to makes a group
    assert body["media"] == ["https://example.com/a.jpg"]
    assert body["priority"] == "high"


def test_send_reads_the_text_from_stdin(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--emulator", "--to", TO, "--text", "-", "--json", input="piped text\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == "piped text"


def test_send_over_oauth2_against_the_emulator(runner: CliRunner) -> None:
    result = invoke(
        runner, "send", "--emulator", "--client-id", "cid", "--client-secret", "cs", "--to", TO, "--text", "x", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["to"] == [TO]


def test_invalid_input_lists_every_field_error_and_sends_nothing(runner: CliRunner, server: Emulator) -> None:
    result = invoke(
        runner,
        "send",
        "--to",
        "12",
        "--to",
        "+15554443333",
        "--from",
        "+1invalid",
        "--expiration",
        "2001-01-01T00:00:00Z",
        env=server_env(server),
    )
    assert result.exit_code == 2
    err = result.stderr
    assert "Invalid message: 4 field errors" in err
    assert "'+1invalid' must be replaced with a valid E164" in err
    assert "'12' must be replaced with a valid E164" in err
    assert "text, media, or both" in err
    assert "must be in the future" in err
    assert "Nothing was sent" in err
    assert server.stats.requests == 0
    assert result.stdout == ""


def test_invalid_input_as_json(runner: CliRunner) -> None:
    result = invoke(runner, "send", "--emulator", "--to", "12", "--text", "x", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "ValidationError"
    assert error["fieldErrors"] == [
        {"fieldName": "to", "description": "'12' must be replaced with a valid E164 formatted telephone number"}
    ]
    assert error["mayHaveBeenSent"] is False


def test_an_api_error_prints_status_type_description_and_fate(runner: CliRunner, server: Emulator) -> None:
    result = invoke(runner, "send", "--to", TO, "--text", "x", env=server_env(server, BW_PASSWORD="not-it"))
    assert result.exit_code == 1
    err = result.stderr
    assert "HTTP 401 unauthorized" in err
    assert "Authentication Failed" in err
    assert "NOT sent" in err
    assert server.stats.accepted == 0
    assert server.stats.by_status[401] == 1  # a 401 is not retried


def test_an_api_error_as_json(runner: CliRunner, server: Emulator) -> None:
    env = server_env(server, BW_ACCOUNT_ID="1234567")  # another account: 403
    result = invoke(runner, "send", "--to", TO, "--text", "x", "--json", env=env)
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["statusCode"] == 403
    assert error["type"] == "forbidden"
    assert error["description"] == "Access Denied"
    assert error["mayHaveBeenSent"] is False
    assert error["attempts"] == 1


def test_a_lost_answer_says_the_message_may_have_been_sent(runner: CliRunner) -> None:
    threaded = ThreadedEmulator(username="u", password="p", p_drop_after=1.0)
    emu = threaded.start()
    try:
        result = invoke(runner, "send", "--to", TO, "--text", "x", env=server_env(emu))
        assert result.exit_code == 1
        assert "MAY have been sent" in result.stderr
        result = invoke(runner, "send", "--to", TO, "--text", "x", "--json", env=server_env(emu))
        error = json.loads(result.stdout)["error"]
        assert (error["mayHaveBeenSent"], error["requestSent"], error["attempts"]) == (True, True, 1)
        assert emu.stats.accepted == 2  # it was in fact accepted: never retried blindly
    finally:
        threaded.stop()


# --- segments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "count", "units"),
    [
        ("Hello", "GSM-7", 1, 5),
        ("a" * 160, "GSM-7", 1, 160),
        ("a" * 161, "GSM-7", 2, 161),
        ("a" * 306, "GSM-7", 2, 306),
        ("a" * 307, "GSM-7", 3, 307),
        ("{" * 80, "GSM-7", 1, 160),  # extension characters take two septets
        ("{" * 81, "GSM-7", 2, 162),
        ("é" * 160, "GSM-7", 1, 160),  # é is in the GSM-7 basic table
        ("ж" * 70, "UCS-2", 1, 70),
        ("ж" * 71, "UCS-2", 2, 71),
        ("ж" * 134, "UCS-2", 2, 134),
        ("ж" * 135, "UCS-2", 3, 135),
        ("👋" * 35, "UCS-2", 1, 70),  # two units each
    ],
)
def test_segments_encoding_count_and_units(runner: CliRunner, text: str, encoding: str, count: int, units: int) -> None:
    result = invoke(runner, "segments", text, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert (report["encoding"], report["segments"], report["units"]) == (encoding, count, units)
    assert report["characters"] == len(text)


def test_segments_names_the_character_that_forces_ucs2(runner: CliRunner) -> None:
    result = invoke(runner, "segments", "Hi there 👋!")
    assert result.exit_code == 0
    out = result.stdout
    assert "UCS-2" in out
    assert "'👋' (U+1F44B WAVING HAND SIGN) at position 10" in out
    report = analyse("Hi there 👋!")
    assert report["ucs2Trigger"] == {
        "character": "👋",
        "position": 10,
        "codepoint": "U+1F44B",
        "name": "WAVING HAND SIGN",
    }


def test_segments_of_a_gsm7_text_has_no_ucs2_note(runner: CliRunner) -> None:
    result = invoke(runner, "segments", "Price: 5€ [sale]")
    assert result.exit_code == 0
    assert "GSM-7" in result.stdout
    assert "UCS-2 because" not in result.stdout
    assert "3 GSM-7 extension characters" in result.stdout
    assert "ucs2Trigger" not in analyse("Price: 5€ [sale]")


def test_segments_with_media_is_one_mms_segment(runner: CliRunner) -> None:
    result = invoke(runner, "segments", "a" * 500, "--media", "https://example.com/a.jpg", "--json")
    report = json.loads(result.stdout)
    assert (report["segments"], report["mms"]) == (1, True)


def test_segments_reads_stdin(runner: CliRunner) -> None:
    result = invoke(runner, "segments", "-", "--json", input="a" * 161 + "\n")
    assert json.loads(result.stdout)["segments"] == 2


# --- demo -----------------------------------------------------------------------------------------

EXPECTED_CALLBACKS = 15  # SMS 2, MMS 3, MMS 3, group SMS 1 + 2, group MMS 2 + 2


def test_demo_runs_the_examples_end_to_end(runner: CliRunner) -> None:
    assert DEFAULT_DEMO in demo.commands
    result = invoke(runner, "demo", "examples")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("202 Accepted") == 5
    for title, _ in EXAMPLES:
        assert title in out
    assert "Status callbacks" in out
    assert f"{EXPECTED_CALLBACKS}/{EXPECTED_CALLBACKS} status callbacks" in out
    assert "5/5 messages accepted (7 recipients)" in out
    assert "message-failed" in out  # the default seed shows failures too


def test_demo_json_has_every_response_and_callback(runner: CliRunner) -> None:
    result = invoke(runner, "demo", "examples", "--json", "--p-delivered", "0.5", "--seed", "11")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    messages, callbacks, summary = doc["messages"], doc["callbacks"], doc["summary"]
    assert len(messages) == 5
    assert [len(m["to"]) for m in messages] == [1, 1, 1, 2, 2]
    assert [len(m.get("media", [])) for m in messages] == [0, 1, 3, 0, 2]
    assert all(m["segmentCount"] == 1 for m in messages)
    assert len(callbacks) == EXPECTED_CALLBACKS == summary["receivedCallbacks"] == summary["expectedCallbacks"]
    by_type: dict[str, int] = {}
    for event in callbacks:
        by_type[event["type"]] = by_type.get(event["type"], 0) + 1
    assert by_type["message-sending"] == 3  # the three MMS
    assert by_type["message-sent"] == 5
    assert by_type.get("message-delivered", 0) + by_type.get("message-failed", 0) == 7
    assert summary["failed"] == by_type.get("message-failed", 0)
    failed = [e for e in callbacks if e["type"] == "message-failed"]
    assert all(e["errorCode"] >= 4000 and e["description"] for e in failed)
    ids = {m["id"] for m in messages}
    assert {e["message"]["id"] for e in callbacks} == ids


def callback(message: Message, type_: str, to: str, error_code: int | None = None) -> bytes:
    event: dict[str, Any] = {
        "time": "2024-01-01T00:00:00.000Z",
        "type": type_,
        "to": to,
        "description": "d",
        "message": {
            "id": message.id,
            "owner": FROM,
            "applicationId": APP_ID,
            "time": "2024-01-01T00:00:00.000Z",
            "segmentCount": 1,
            "direction": "out",
            "to": message.to,
            "from": FROM,
            "text": "",
        },
    }
    if error_code is not None:
        event["errorCode"] = error_code
    return json.dumps([event]).encode()


async def test_collector_expects_sending_for_mms_sent_and_one_final_per_recipient() -> None:
    sms = Message(id="sms", to=[TO])
    group_mms = Message(id="mms", to=[TO, "+15554443333"], media=["https://example.com/a.jpg"])
    assert len(expected_callbacks(sms)) == 2
    assert len(expected_callbacks(group_mms)) == 4

    collector = CallbackCollector()
    # Callbacks may arrive before the 202 is read: kept, and counted once expected.
    collector.add(decode_callbacks(callback(sms, "message-sent", TO)))
    assert not collector.done.is_set()
    collector.expect([sms, group_mms])
    assert (collector.received, collector.expected) == (1, 6)
    collector.add(decode_callbacks(callback(sms, "message-sent", TO)))  # at-least-once: a duplicate
    assert collector.duplicates == 1
    for body in (
        callback(sms, "message-delivered", TO),
        callback(group_mms, "message-sending", TO),
        callback(group_mms, "message-sent", TO),
        callback(group_mms, "message-delivered", TO),
    ):
        collector.add(decode_callbacks(body))
    assert not collector.done.is_set()
    collector.add(decode_callbacks(callback(group_mms, "message-failed", "+15554443333", 4720)))
    assert collector.done.is_set()
    assert collector.received == 6
    assert len(collector.events) == 6
    assert collector.events[-1].error_code == 4720


def test_callback_table_fits_80_columns_without_cutting_ids() -> None:
    import io

    from rich.console import Console

    from bwasync.cli._output import callbacks_table

    message = Message(id="1795738813081ujbvn7n6047652xl", to=[TO, "+15554443333"])
    events = [
        *decode_callbacks(callback(message, "message-sent", TO)),
        *decode_callbacks(callback(message, "message-delivered", TO)),
        *decode_callbacks(callback(message, "message-failed", "+15554443333", 4720)),
    ]
    for width, wide in ((80, False), (120, True)):
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None)
        console.print(callbacks_table(events, labels={message.id: "1"}, width=width))
        text = buffer.getvalue()
        assert "…" not in text
        assert all(len(line) <= width for line in text.splitlines())
        assert text.count(message.id) == 3
        assert ("message-delivered" in text) is wide
        assert "4720 d" in text  # the description: in the row when wide, in a legend when not


# --- emulator (argument handling; serving is tested as a subprocess below) -------------------------


def test_emulator_help_has_one_option_per_knob(runner: CliRunner) -> None:
    import dataclasses

    from bwasync.emulator import EmulatorConfig

    result = invoke(runner, "emulator", "--help")
    assert result.exit_code == 0
    for field in dataclasses.fields(EmulatorConfig):
        assert "--" + field.name.replace("_", "-") in result.output
    assert "--host" in result.output and "--port" in result.output


def test_emulator_rejects_bad_knob_values_before_serving(runner: CliRunner) -> None:
    result = invoke(runner, "emulator", "--p-500", "2")
    assert result.exit_code == 2
    assert "--p-500" in result.stderr and "not a probability" in result.stderr
    result = invoke(runner, "emulator", "--p-500", "0.6", "--p-503", "0.6")
    assert result.exit_code == 2
    assert "add up to" in result.stderr


# --- as a user types it: real processes -------------------------------------------------------


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BW_")}
    env.update(extra)
    return env


class LineReader:
    """Lines of a child's stdout, read by a thread, so a test can wait for one with a timeout.

    (``select`` on the pipe is not enough: the text wrapper may already hold the next lines.)
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stream:
            self._lines.put(line)
        self._lines.put("")  # EOF

    def line(self, timeout: float = PROCESS_TIMEOUT) -> str:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s") from None

    def join(self) -> None:
        self._thread.join(PROCESS_TIMEOUT)


def test_python_m_bwasync_cli_sends_to_the_emulator() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bwasync.cli", "send", "--emulator", "--to", TO, "--text", "Hi 👋", "--json"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env=user_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["text"] == "Hi 👋"
    assert body["segmentCount"] == 1
    assert "emulator" in done.stderr


def test_bwasync_script_reports_missing_settings() -> None:
    done = subprocess.run(
        [str(BIN / "bwasync"), "send", "--to", TO, "--text", "x"],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        env=user_env(BW_ACCOUNT_ID=ACCOUNT, BW_USERNAME="u", BW_PASSWORD="p", BW_NUMBER=FROM),
        check=False,
    )
    assert done.returncode == 2
    assert "Missing --application-id (or set BW_APPLICATION_ID)" in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_emulator_command_serves_until_sigint() -> None:
    command = [str(BIN / "bwasync"), "emulator", "--port", "0", "--username", "u", "--password", "p"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env()) as proc:
        reader = LineReader(proc)
        try:
            first = reader.line()
            assert first.startswith("bwasync emulator listening on http://127.0.0.1:")
            url = first.split()[-1]
            assert url.endswith("/api/v2")
            exports = [reader.line() for _ in range(10)]
            assert f"  export BW_MESSAGING_URL={url}\n" in exports

            # A client configured only by the environment it prints (in this process: the
            # standalone emulator is what this test runs as a user would).
            env = {
                "BW_MESSAGING_URL": url,
                "BW_ACCOUNT_ID": ACCOUNT,
                "BW_USERNAME": "u",
                "BW_PASSWORD": "p",
                "BW_APPLICATION_ID": APP_ID,
                "BW_NUMBER": FROM,
            }
            text = "through the standalone emulator"
            done = invoke(CliRunner(), "send", "--to", TO, "--text", text, "--json", env=env)
            assert done.exit_code == 0, done.stderr
            assert json.loads(done.stdout)["text"] == text

            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=PROCESS_TIMEOUT) == 0
            assert proc.stderr is not None
            err = proc.stderr.read()
            assert "Stopped after 1 request: 1 message accepted" in err
            assert "Traceback" not in err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join()


def test_demo_without_subcommand_is_the_campaign(runner: CliRunner) -> None:
    from bwasync.cli._demo import DEFAULT_DEMO, demo

    assert DEFAULT_DEMO == "campaign"
    assert set(demo.commands) >= {"campaign", "examples"}
    result = invoke(runner, "demo", "--help")
    assert result.exit_code == 0 and "10,000" in result.output


def test_an_error_nobody_retrieved_is_one_warning_line_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A task that failed and was dropped: the loop's report is one warning line without its
    traceback (the loop's default handler would print one); the traceback only at debug level."""

    async def main() -> None:
        async def fails() -> None:
            raise ConnectionError("the server went away")

        task = asyncio.ensure_future(fails())
        await asyncio.wait((task,))
        del task  # dropped with its exception unread: the loop reports it when the task is freed

    with caplog.at_level(logging.DEBUG, logger="bwasync.cli"):
        run(main())
    reports = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert [(r.levelno, r.getMessage(), r.exc_info) for r in reports] == [
        (logging.WARNING, "Task exception was never retrieved: ConnectionError: the server went away", None)
    ]
    assert [r.exc_info[0] for r in caplog.records if r.exc_info and r.levelno == logging.DEBUG] == [ConnectionError]
