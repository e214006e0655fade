"""Data intervals of the three cadences, computed the way the DAGs' cron timetables cut them.

A weekly interval runs from 00:00 UTC on the model's weekday (Monday unless the config
staggers it, e.g. sentiment on Tuesday) to the same time a week later, a monthly one from
the 1st to the next 1st, a quarterly one from 1 January, April, July or October to the next.
Seeding, the demo, the benchmarks and the tests place data with these functions, so they
agree with each other and with the scheduler. Plain Python, no Airflow.

Every function takes a cadence name (``"weekly"``: a Monday week) or a ``Calendar``
(``config.schedule.calendar``), which also carries the weekday.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MONTHS_PER_PERIOD = {"monthly": 1, "quarterly": 3}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Calendar:
    """How a schedule cuts time into data intervals: the cadence, and for weekly the weekday (0 = Monday)."""

    cadence: str
    weekday: int = 0


def _calendar(cadence: str | Calendar) -> Calendar:
    return cadence if isinstance(cadence, Calendar) else Calendar(cadence)


def _utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def boundary_on_or_before(cadence: str | Calendar, moment: datetime) -> datetime:
    """The latest interval boundary at or before ``moment`` (an interval end, and the next start)."""
    calendar = _calendar(cadence)
    day = moment.astimezone(UTC).date()
    if calendar.cadence == "weekly":
        return _utc_midnight(day - timedelta(days=(day.weekday() - calendar.weekday) % 7))
    months = MONTHS_PER_PERIOD[calendar.cadence]
    return _utc_midnight(date(day.year, (day.month - 1) // months * months + 1, 1))


def shift(cadence: str | Calendar, boundary: datetime, periods: int) -> datetime:
    """``boundary`` moved by whole periods (negative moves back)."""
    calendar = _calendar(cadence)
    if calendar.cadence == "weekly":
        return boundary + timedelta(weeks=periods)
    month0 = boundary.year * 12 + boundary.month - 1 + periods * MONTHS_PER_PERIOD[calendar.cadence]
    return boundary.replace(year=month0 // 12, month=month0 % 12 + 1)


def is_boundary(cadence: str | Calendar, day: date) -> bool:
    """Whether ``day`` starts an interval of this cadence."""
    return boundary_on_or_before(cadence, _utc_midnight(day)).date() == day


def latest_complete_interval(cadence: str | Calendar, now: datetime) -> tuple[datetime, datetime]:
    """The interval that ended most recently: what the scheduler runs next with catchup off."""
    end = boundary_on_or_before(cadence, now)
    return shift(cadence, end, -1), end


def intervals_ending(cadence: str | Calendar, end: datetime, count: int) -> list[tuple[datetime, datetime]]:
    """``count`` consecutive intervals, oldest first, the last one ending at ``end``."""
    starts = [shift(cadence, end, -k) for k in range(count, 0, -1)]
    return [(start, shift(cadence, start, 1)) for start in starts]


def latest_complete_week(now: datetime) -> tuple[datetime, datetime]:
    """The Monday-to-Monday interval that ended most recently."""
    return latest_complete_interval("weekly", now)
