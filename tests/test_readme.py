"""The README's usage example runs as written, pointed at the emulator instead of Bandwidth."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
REAL = 'async with MessagingClient("9900000", username="api-token", password="api-secret") as client:'
LOCAL = (
    'async with Emulator(username="api-token", password="api-secret") as emu, '
    'MessagingClient("9900000", username="api-token", password="api-secret", base_url=emu.url) as client:'
)


def test_usage_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = README.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]
    assert REAL in code, "the README example changed: update this test"
    script = tmp_path / "example.py"
    script.write_text("from bwasync.emulator import Emulator\n" + code.replace(REAL, LOCAL), encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    message_id, segments = lines[0].split()
    assert len(message_id) == 29 and segments == "1"
    assert lines[1].startswith("accepted 1 ")
