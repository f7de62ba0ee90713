"""A type checker flags a misspelt or mistyped keyword on the client's sending and listing calls,
and on the webhook handler factories.

``tests/typing/misspelt_fields.py`` holds correct calls and, marked ``# E:``, wrong ones; mypy must
report an error on exactly the marked lines.
"""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

CASES = Path(__file__).parent / "typing" / "misspelt_fields.py"
ROOT = Path(__file__).parent.parent


def test_mypy_flags_exactly_the_misspelt_keywords() -> None:
    expected = {n for n, line in enumerate(CASES.read_text().splitlines(), 1) if re.search(r"[)\]]  # E: ", line)}
    cache = str(ROOT / ".mypy_cache")
    stdout, stderr, _ = api.run(["--strict", "--no-error-summary", "--cache-dir", cache, str(CASES)])
    flagged = {int(m.group(1)) for m in re.finditer(r"misspelt_fields\.py:(\d+): error", stdout)}
    assert expected and flagged == expected, stdout + stderr
