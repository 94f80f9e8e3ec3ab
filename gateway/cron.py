"""Standard crontab expressions on APScheduler 3 triggers, in any time zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# How far back latest_fire_time looks, widening until one fire time is found.
_LOOKBACK_WINDOWS = (
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=9),
    timedelta(days=32),
    timedelta(days=400),
)


def crontab_trigger(expression: str, timezone: ZoneInfo) -> CronTrigger:
    """Return the trigger of a five-field crontab expression read in TIMEZONE.

    APScheduler 3 counts weekdays from 0 = Monday, while crontab counts from
    0 = Sunday, so the weekday field is translated to names first: "1-5" means
    Monday to Friday, as in crontab. Raises ValueError for an invalid expression.
    """
    values = expression.split()
    if len(values) != 5:
        raise ValueError(f"expected 5 fields, got {len(values)}")
    minute, hour, day, month, weekday = values
    # NOTE: when both day and weekday are restricted, crontab fires on either
    # match but APScheduler only on days that match both.
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_weekday_names(weekday),
        timezone=timezone,
    )


def latest_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """Return the trigger's latest fire time at or before NOW, or None within 400 days."""
    for window in _LOOKBACK_WINDOWS:
        latest = None
        fire_time = trigger.get_next_fire_time(None, now - window)
        while fire_time is not None and fire_time <= now:
            latest = fire_time
            fire_time = trigger.get_next_fire_time(None, fire_time + timedelta(seconds=1))
        if latest is not None:
            return latest
    return None


def _weekday_names(field: str) -> str:
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        base, _, step_text = item.partition("/")
        step = _whole_number(step_text, item) if step_text else 1
        if step < 1:
            raise ValueError(f"invalid step in weekday {item!r}")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _weekday(start), _weekday(end)
            if last == 0 and end.strip() in ("7",):
                last = 7
        else:
            first = last = _weekday(base)
            if step_text:
                last = 6
        if first > last:
            raise ValueError(f"weekday range {item!r} runs backwards")
        days.update(number % 7 for number in range(first, last + 1, step))
    # Listed Monday first, the way APScheduler counts.
    return ",".join(WEEKDAY_NAMES[number] for number in (1, 2, 3, 4, 5, 6, 0)
                    if number in days)


def _weekday(text: str) -> int:
    text = text.strip().lower()
    if text in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(text)
    number = _whole_number(text, text)
    if not 0 <= number <= 7:
        raise ValueError(f"weekday {text!r} is out of range 0-7")
    return number % 7


def _whole_number(text: str, item: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"invalid weekday value {item!r}")
    return int(text)
