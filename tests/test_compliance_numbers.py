"""Numbers that cannot exist: libphonenumber's validity, with a reason a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bwasync import MessageRequest
from bwasync.compliance import NumberCheck, check_number


@pytest.mark.parametrize(
    ("number", "region"),
    [
        ("+12125551234", "US"),
        ("+18005550100", "US"),
        ("+442079460958", "GB"),
        ("+8613812345678", "CN"),
        ("+390612345678", "IT"),  # Rome: the national number keeps its leading zero
    ],
)
def test_real_numbers_are_valid_with_their_region(number: str, region: str) -> None:
    assert check_number(number) == NumberCheck(True, None, region)


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("+1555", "too short for +1 (US)"),
        ("+1212555123", "too short for +1 (US)"),
        ("+121255512345", "too long for +1 (US)"),
        ("+3312345678", "too short for +33 (FR)"),
        ("+999123456", "invalid country code: none of +9, +99, +999 is a country code"),
        ("+28123456", "invalid country code: none of +2, +28, +281 is a country code"),
        ("+8081234", "too short for +808 (non-geographic)"),
        ("+119195550101", "too long for +1 (US)"),
        ("+15555551234", "invalid area code 555: no place uses it"),
        ("+10005551234", "invalid area code 000: North American area codes start with 2-9"),
        ("+19115551234", "invalid area code 911: N11 codes are service numbers (211, 411, 911...), not area codes"),
        ("+12120551234", "invalid exchange 055 in area code 212: exchanges start with 2-9"),
        ("12125551234", "not an E.164 number ('+' and 2 to 15 digits, the first 1 to 9)"),
    ],
)
def test_impossible_numbers_say_why(number: str, reason: str) -> None:
    check = check_number(number)
    assert not check.valid
    assert check.reason == reason


def test_message_request_keeps_to_bandwidths_rules_only() -> None:
    # Bandwidth accepts any E.164 shape, so MessageRequest does too; the check is separate.
    request = MessageRequest(to="+15555551234", from_="+12125551234", application_id="app", text="hi")
    assert request.to == ["+15555551234"]
    assert not check_number(request.to[0]).valid


def test_the_readme_compliance_example_runs_and_says_what_it_prints() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    code = readme.split("## Compliance", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    shown = next(line for line in code.splitlines() if line.startswith("check_number("))
    assert repr(check_number("+15555551234")) == shown.split("# ", 1)[1]


def test_north_american_regions_are_found_again_by_area_code_exactly() -> None:
    # The +1 region is remembered per area code: a second number of the same area code, or a
    # number of another region's area code in between, must get exactly libphonenumber's answer.
    pn = pytest.importorskip("phonenumbers")
    numbers = [
        "+18765230123",
        "+12015550123",
        "+18765230124",
        "+15062345678",
        "+17872345678",
        "+12015550124",
        "+18765230100",
        "+15062345679",
        "+19195550100",
        "+19190100000",
    ]
    for number in numbers * 2:
        parsed = pn.parse(number)
        expected = pn.region_code_for_number(parsed) if pn.is_valid_number(parsed) else None
        check = check_number(number)
        assert (check.valid, check.region) == (expected is not None, expected), number
