"""Clicks counted per seller's day (`click_day`: bot, day in REPORT_TIMEZONE, utm_source,
utm_campaign, pool): reports read these, so counts outlive the raw click rows, which are pruned
after 8 days when no /start took them. Filled here from the click rows still kept.

Frozen column definitions as they were when this migration was written (see 0001)."""

import datetime as dt
import json
import os
from zoneinfo import ZoneInfo

from peewee import AutoField, CharField, DateField, IntegerField, Model


def up(migrator, db):
    class ClickDay(Model):
        id = AutoField()
        bot_id = CharField(max_length=64)
        day = DateField()
        utm_source = CharField(max_length=191, default="")
        utm_campaign = CharField(max_length=191, default="")
        pool_id = CharField(max_length=64, default="")
        clicks = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "click_day"
            indexes = ((("bot_id", "day", "utm_source", "utm_campaign", "pool_id"), True), (("day",), False))

    db.create_tables([ClickDay])
    zone = ZoneInfo(os.environ.get("REPORT_TIMEZONE", "").strip() or "America/Sao_Paulo")
    counts: dict[tuple[str, dt.date, str, str, str], int] = {}
    cursor = db.execute_sql('SELECT "bot_id", "clicked_at", "utm", "pool_id" FROM "click"')
    for bot_id, clicked_at, utm, pool_id in cursor:
        if isinstance(clicked_at, str):
            clicked_at = dt.datetime.fromisoformat(clicked_at)
        utm = json.loads(utm) if isinstance(utm, str) else (utm or {})
        day = clicked_at.replace(tzinfo=dt.UTC).astimezone(zone).date()
        key = (
            bot_id,
            day,
            str(utm.get("utm_source") or "")[:191],
            str(utm.get("utm_campaign") or "")[:191],
            pool_id or "",
        )
        counts[key] = counts.get(key, 0) + 1
    rows = [
        {"bot_id": k[0], "day": k[1], "utm_source": k[2], "utm_campaign": k[3], "pool_id": k[4], "clicks": n}
        for k, n in counts.items()
    ]
    for i in range(0, len(rows), 500):
        ClickDay.insert_many(rows[i : i + 500]).execute()
