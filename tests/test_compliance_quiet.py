"""Quiet hours: a pure function of a window, zones and an instant, checked on fixed instants."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bwasync import ConfigurationError
from bwasync.compliance import QuietCheck, QuietHours, zones_for_number

NIGHT = QuietHours.parse("21:00-08:00")
NY = "America/New_York"
LA = "America/Los_Angeles"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- parsing ------------------------------------------------------------------------------------


def test_parse_reads_start_and_end_and_prints_back() -> None:
    window = QuietHours.parse(" 21:00-08:30 ")
    assert (window.start, window.end) == (time(21, 0), time(8, 30))
    assert str(window) == "21:00-08:30"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9pm-8am", "HH:MM-HH:MM"),
        ("21:00", "HH:MM-HH:MM"),
        ("21:00 - 08:00", "HH:MM-HH:MM"),
        ("9:00-17:00", "HH:MM-HH:MM"),
        ("24:00-08:00", "24:00 is not a time of day"),
        ("21:60-08:00", "21:60 is not a time of day"),
        ("08:00-08:00", "start and end are equal"),
        ("", "HH:MM-HH:MM"),
    ],
)
def test_parse_refuses_anything_but_hh_mm_dash_hh_mm_with_a_clear_message(text: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        QuietHours.parse(text)


def test_a_window_is_quiet_from_start_inclusive_to_end_exclusive() -> None:
    assert NIGHT.is_quiet_at(time(21, 0)) and NIGHT.is_quiet_at(time(0, 0)) and NIGHT.is_quiet_at(time(7, 59))
    assert not NIGHT.is_quiet_at(time(8, 0)) and not NIGHT.is_quiet_at(time(20, 59))
    lunch = QuietHours.parse("12:00-13:00")
    assert lunch.is_quiet_at(time(12, 30)) and not lunch.is_quiet_at(time(13, 0)) and not lunch.is_quiet_at(time(0, 0))


# --- one zone -------------------------------------------------------------------------------------


def test_allowed_in_the_afternoon_and_next_allowed_is_now() -> None:
    now = at(2026, 6, 1, 18, 0)  # 14:00 EDT
    check = NIGHT.check([NY], now)
    assert check == QuietCheck(True, now, (NY,))


def test_late_evening_waits_for_eight_the_next_morning() -> None:
    check = NIGHT.check([NY], at(2026, 6, 2, 2, 0))  # 22:00 EDT on June 1
    assert not check.allowed
    assert check.next_allowed == at(2026, 6, 2, 12, 0)  # 08:00 EDT
    assert check.quiet_zones == (NY,)
    assert check.reason == "quiet hours 21:00-08:00 in America/New_York (22:00 local)"


def test_after_midnight_waits_for_the_same_mornings_end() -> None:
    check = NIGHT.check([NY], at(2026, 6, 2, 9, 30))  # 05:30 EDT
    assert check.next_allowed == at(2026, 6, 2, 12, 0)


def test_a_window_within_one_day() -> None:
    lunch = QuietHours.parse("12:00-13:30")
    check = lunch.check(["Europe/Paris"], at(2026, 1, 15, 11, 0))  # 12:00 CET
    assert check.next_allowed == at(2026, 1, 15, 12, 30)


def test_a_zone_without_daylight_saving() -> None:
    # Asia/Kolkata is UTC+05:30 all year: 05:30 local at midnight UTC, allowed from 02:30 UTC.
    assert NIGHT.check(["Asia/Kolkata"], at(2026, 3, 8, 0, 0)).next_allowed == at(2026, 3, 8, 2, 30)
    assert NIGHT.check(["Asia/Kolkata"], at(2026, 11, 1, 0, 0)).next_allowed == at(2026, 11, 1, 2, 30)
    # Arizona keeps standard time: 08:00 MST is 15:00 UTC before and after the US changes.
    for day in (datetime(2026, 3, 8, 10, tzinfo=UTC), datetime(2026, 3, 9, 10, tzinfo=UTC)):
        assert NIGHT.check(["America/Phoenix"], day).next_allowed == day.replace(hour=15)


def test_seconds_count_inside_a_minute() -> None:
    # 07:59:59.9 EDT is still quiet; 08:00:00 is not; the answer holds for the whole minute.
    assert NIGHT.check([NY], datetime(2026, 6, 2, 11, 59, 59, 900000, tzinfo=UTC)).next_allowed == at(2026, 6, 2, 12, 0)
    later = datetime(2026, 6, 2, 12, 0, 30, 500000, tzinfo=UTC)
    assert NIGHT.check([NY], later) == QuietCheck(True, later, (NY,))


def test_windows_are_whole_minutes() -> None:
    with pytest.raises(ConfigurationError, match="whole minutes"):
        QuietHours(time(21, 0, 30), time(8, 0))


# --- daylight saving ------------------------------------------------------------------------------


def test_spring_forward_morning_ends_at_eight_daylight_time() -> None:
    # New York springs forward at 02:00 EST on 2026-03-08 (07:00 UTC): 08:00 is EDT (12:00 UTC).
    check = NIGHT.check([NY], at(2026, 3, 8, 3, 0))  # 22:00 EST on the 7th
    assert check.next_allowed == at(2026, 3, 8, 12, 0)


def test_fall_back_morning_ends_at_eight_standard_time() -> None:
    # New York falls back at 02:00 EDT on 2026-11-01 (06:00 UTC): 08:00 is EST (13:00 UTC),
    # so the quiet night is an hour longer in UTC.
    check = NIGHT.check([NY], at(2026, 11, 1, 3, 0))  # 23:00 EDT on Oct 31
    assert check.next_allowed == at(2026, 11, 1, 13, 0)


def test_an_end_skipped_by_spring_forward_ends_the_window_at_the_jump() -> None:
    # 02:30 does not exist on 2026-03-08 in New York: the clock goes 01:59:59 EST -> 03:00 EDT.
    window = QuietHours.parse("21:00-02:30")
    check = window.check([NY], at(2026, 3, 8, 6, 0))  # 01:00 EST
    assert check.next_allowed == at(2026, 3, 8, 7, 0)  # 03:00 EDT, the first instant past 02:30
    assert window.check([NY], at(2026, 3, 8, 7, 0)).allowed


def test_an_end_repeated_by_fall_back_ends_at_its_next_occurrence() -> None:
    # 01:00-01:59 happens twice on 2026-11-01 in New York (EDT, then EST).
    window = QuietHours.parse("00:00-01:30")
    first_pass = window.check([NY], at(2026, 11, 1, 5, 10))  # 01:10 EDT
    assert first_pass.next_allowed == at(2026, 11, 1, 5, 30)  # 01:30 EDT
    second_pass = window.check([NY], at(2026, 11, 1, 6, 10))  # 01:10 EST, quiet again
    assert not second_pass.allowed
    assert second_pass.next_allowed == at(2026, 11, 1, 6, 30)  # 01:30 EST


def test_a_start_skipped_by_spring_forward_is_not_quiet_before_it_is_reached() -> None:
    window = QuietHours.parse("02:15-05:00")
    assert window.check([NY], at(2026, 3, 8, 6, 59)).allowed  # 01:59 EST
    assert not window.check([NY], at(2026, 3, 8, 7, 0)).allowed  # 03:00 EDT: inside


# --- several zones ----------------------------------------------------------------------------------


def test_several_zones_wait_until_it_is_allowed_in_all_of_them() -> None:
    now = at(2026, 6, 1, 12, 30)  # 08:30 in New York, 05:30 in Los Angeles
    check = NIGHT.check([NY, LA], now)
    assert not check.allowed
    assert check.quiet_zones == (LA,)
    assert check.next_allowed == at(2026, 6, 1, 15, 0)  # 08:00 PDT
    assert NIGHT.check([NY, LA], check.next_allowed).allowed


def test_several_zones_whose_allowed_hours_never_meet() -> None:
    # Allowed 10:00-18:00: Tokyo 01:00-09:00 UTC, New York (EDT) 14:00-22:00 UTC: never both.
    check = QuietHours.parse("18:00-10:00").check(["Asia/Tokyo", NY], at(2026, 6, 1, 0, 0))
    assert not check.allowed and check.next_allowed is None
    assert "never ends in all of Asia/Tokyo, America/New_York at once" in (check.reason or "")


def test_no_zone_is_not_allowed_and_never_becomes_so() -> None:
    check = NIGHT.check([], at(2026, 6, 1, 18, 0))
    assert not check.allowed and check.next_allowed is None and check.reason


def test_unknown_zone_and_naive_instant_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus'"):
        NIGHT.check(["Mars/Olympus"], at(2026, 6, 1, 18, 0))
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        NIGHT.check([NY], datetime(2026, 6, 1, 18, 0))


def test_an_instant_in_any_offset_is_the_same_instant() -> None:
    paris_time = datetime(2026, 6, 2, 4, 0, tzinfo=timezone(timedelta(hours=2)))  # 02:00 UTC
    assert NIGHT.check([NY], paris_time).next_allowed == at(2026, 6, 2, 12, 0)


# --- numbers --------------------------------------------------------------------------------------


def test_a_numbers_zone_comes_from_libphonenumber() -> None:
    assert zones_for_number("+12125551234") == (NY,)
    assert zones_for_number("+14155552671") == (LA,)


def test_a_number_spanning_two_zones_waits_for_both() -> None:
    # +1 701 (North Dakota) rings in Mountain and Central time.
    assert zones_for_number("+17015551234") == ("America/Denver", "America/North_Dakota/Center")
    check = NIGHT.check_numbers(["+17015551234"], at(2026, 6, 1, 13, 30))  # 08:30 CDT, 07:30 MDT
    assert not check.allowed and check.quiet_zones == ("America/Denver",)
    assert check.next_allowed == at(2026, 6, 1, 14, 0)  # 08:00 MDT


def test_a_group_message_goes_only_when_allowed_for_every_recipient() -> None:
    now = at(2026, 6, 1, 12, 30)
    assert NIGHT.check_numbers(["+12125551234"], now).allowed
    group = NIGHT.check_numbers(["+12125551234", "+14155552671"], now)
    assert not group.allowed and group.next_allowed == at(2026, 6, 1, 15, 0)


def test_an_unplaceable_number_gets_its_whole_countrys_zones() -> None:
    # 555 is no area code: every zone of the North American Numbering Plan, Guam to St John's.
    zones = zones_for_number("+15555551234")
    assert {"Pacific/Guam", "America/St_Johns", NY, "Pacific/Honolulu"} <= set(zones)
    assert "Etc/Unknown" not in zones
    # At 00:00 UTC it is 20:00 in New York but 21:30 in St John's: quiet there. In June the
    # zones' allowed hours (08:00-21:00 local) all meet only from 22:00 UTC (08:00 in Guam) to
    # 23:30 UTC (21:00 in St John's).
    check = NIGHT.check_numbers(["+15555551234"], at(2026, 6, 2, 0, 0))
    assert not check.allowed and "America/St_Johns" in check.quiet_zones
    assert check.next_allowed == at(2026, 6, 2, 22, 0)
    assert not NIGHT.check(zones, at(2026, 6, 2, 21, 59)).allowed


def test_a_number_with_an_unknown_country_code_is_never_allowed() -> None:
    assert zones_for_number("+999123456") == ()
    check = NIGHT.check_numbers(["+12125551234", "+999123456"], at(2026, 6, 1, 18, 0))
    assert not check.allowed and check.next_allowed is None
    assert check.reason == "no time zone known for +999123456"


def test_without_phonenumbers_the_number_functions_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "phonenumbers", None)
    zones_for_number.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=r"bwasync\[compliance\]"):
            zones_for_number("+12125551234")
    finally:
        zones_for_number.cache_clear()
    assert NIGHT.check([NY], at(2026, 6, 1, 18, 0)).allowed  # explicit zones need no extra


# --- against a minute-by-minute oracle --------------------------------------------------------------

ORACLE_ZONES = [NY, LA, "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham"]


def quiet_somewhere(window: QuietHours, zones: list[str], instant: datetime) -> bool:
    """The rule stated plainly: quiet if the local wall clock is in the window in any zone."""
    return any(window.is_quiet_at(instant.astimezone(ZoneInfo(z)).time()) for z in zones)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    # Start and length in minutes: usual evening windows, and any other.
    start=st.one_of(st.sampled_from([21 * 60, 20 * 60, 22 * 60 + 30, 1 * 60 + 30]), st.integers(0, 24 * 60 - 1)),
    length=st.one_of(st.sampled_from([11 * 60, 12 * 60 + 30, 45]), st.integers(1, 15 * 60)),
    zones=st.lists(st.sampled_from(ORACLE_ZONES), min_size=1, max_size=2, unique=True),
    # Instants around 2026's DST changes (March, April, October, November) and any other day.
    minute=st.one_of(
        st.integers(0, 365 * 24 * 60),
        st.sampled_from([66 * 24 * 60, 88 * 24 * 60, 94 * 24 * 60, 297 * 24 * 60, 304 * 24 * 60]).flatmap(
            lambda m: st.integers(m - 2 * 24 * 60, m + 2 * 24 * 60)
        ),
    ),
    second=st.integers(0, 59),
)
def test_next_allowed_is_the_first_minute_the_plain_rule_allows(
    start: int, length: int, zones: list[str], minute: int, second: int
) -> None:
    window = QuietHours(time(start // 60, start % 60), time((start + length) // 60 % 24, (start + length) % 60))
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute, seconds=second)
    check = window.check(zones, now)
    assert check.allowed == (not quiet_somewhere(window, zones, now))
    if check.allowed:
        return
    # Status only changes on whole UTC minutes, so stepping minute by minute is exact.
    t = now.replace(second=0) + timedelta(minutes=1)
    limit = now + timedelta(days=2)
    while t <= limit and quiet_somewhere(window, zones, t):
        t += timedelta(minutes=1)
    if t > limit:
        assert check.next_allowed is None
    else:
        assert check.next_allowed == t
