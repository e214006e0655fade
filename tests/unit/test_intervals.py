"""Data intervals of the three cadences agree with the DAGs' cron timetables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retrain.intervals import Calendar, intervals_ending, is_boundary, latest_complete_interval

UTC = UTC


@pytest.mark.parametrize(
    ("cadence", "now", "start", "end"),
    [
        (
            "weekly",
            datetime(2026, 11, 23, 0, 0, tzinfo=UTC),
            datetime(2026, 11, 16, tzinfo=UTC),
            datetime(2026, 11, 23, tzinfo=UTC),
        ),
        (
            "weekly",
            datetime(2026, 11, 22, 23, 59, tzinfo=UTC),
            datetime(2026, 11, 9, tzinfo=UTC),
            datetime(2026, 11, 16, tzinfo=UTC),
        ),
        (
            "monthly",
            datetime(2026, 11, 23, tzinfo=UTC),
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2026, 11, 1, tzinfo=UTC),
        ),
        (
            "quarterly",
            datetime(2026, 11, 23, tzinfo=UTC),
            datetime(2026, 7, 1, tzinfo=UTC),
            datetime(2026, 10, 1, tzinfo=UTC),
        ),
        (
            "quarterly",
            datetime(2027, 1, 1, tzinfo=UTC),
            datetime(2026, 10, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_latest_complete_interval(cadence, now, start, end):
    assert latest_complete_interval(cadence, now) == (start, end)


def test_consecutive_intervals_cross_year_boundaries():
    got = intervals_ending("monthly", datetime(2027, 2, 1, tzinfo=UTC), 3)
    assert [(s.date().isoformat(), e.date().isoformat()) for s, e in got] == [
        ("2026-11-01", "2026-12-01"),
        ("2026-12-01", "2027-01-01"),
        ("2027-01-01", "2027-02-01"),
    ]
    assert is_boundary("quarterly", datetime(2026, 4, 1).date()) and not is_boundary(
        "quarterly", datetime(2026, 5, 1).date()
    )


def test_a_staggered_weekly_calendar_cuts_tuesday_weeks():
    tuesday = Calendar("weekly", weekday=1)
    monday_now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday: the Tuesday week that ended is 10th-17th
    assert latest_complete_interval(tuesday, monday_now) == (
        datetime(2026, 11, 10, tzinfo=UTC),
        datetime(2026, 11, 17, tzinfo=UTC),
    )
    assert latest_complete_interval(tuesday, datetime(2026, 11, 24, tzinfo=UTC))[1] == datetime(
        2026, 11, 24, tzinfo=UTC
    )
    assert is_boundary(tuesday, datetime(2026, 11, 17).date()) and not is_boundary(
        tuesday, datetime(2026, 11, 16).date()
    )
    assert [s.weekday() for s, _ in intervals_ending(tuesday, datetime(2026, 11, 17, tzinfo=UTC), 3)] == [1, 1, 1]
    assert latest_complete_interval(Calendar("weekly"), monday_now) == latest_complete_interval("weekly", monday_now)
