"""The sellers' days: reports count by the calendar of REPORT_TIMEZONE (default America/Sao_Paulo),
not by UTC's, in Python (`local_day`) and in SQL (`sql_local_date`). Timestamps are stored as naive
UTC everywhere."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import settings
from db.database import is_sqlite

_NAME = re.compile(r"^[A-Za-z0-9_+\-/]{1,64}$")


def _zone(name: str) -> ZoneInfo:
    try:
        if not _NAME.match(name):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(f"setting REPORT_TIMEZONE must be an IANA time zone such as America/Sao_Paulo, got {name!r}") \
            from None  # fmt: skip


ZONE = _zone(settings.REPORT_TIMEZONE)


def local_day(at: dt.datetime, zone: ZoneInfo = ZONE) -> dt.date:
    """The seller's calendar day of a naive UTC time."""
    return at.replace(tzinfo=dt.UTC).astimezone(zone).date()


def day_start(day: dt.date, zone: ZoneInfo = ZONE) -> dt.datetime:
    """The naive UTC time the seller's `day` begins."""
    return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC).replace(tzinfo=None)


def sql_local_date(column: str, zone: ZoneInfo = ZONE) -> str:
    """SQL for the seller's day of a naive UTC column, as 'YYYY-MM-DD' text. PostgreSQL converts with
    the zone's rules; SQLite (no zone data) with the zone's offset now: exact for zones without
    daylight saving time (America/Sao_Paulo since 2019), an hour off near a change elsewhere."""
    if is_sqlite():
        offset = dt.datetime.now(zone).utcoffset() or dt.timedelta()
        return f"date({column}, '{int(offset.total_seconds()):+d} seconds')"
    return f"to_char(({column} AT TIME ZONE 'UTC') AT TIME ZONE '{zone.key}', 'YYYY-MM-DD')"
