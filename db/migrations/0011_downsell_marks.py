"""A permanent mark per (lead, downsell) (CONTRACT §8: each downsell at most once per lead), filled
from the follow-up rows still kept; those rows are pruned after 90 days, the marks never.

Frozen column definitions as they were when this migration was written (see 0001)."""

import datetime

from peewee import AutoField, DateTimeField, IntegerField, Model


def up(migrator, db):
    class DownsellMark(Model):
        id = AutoField()
        lead_id = IntegerField()
        position = IntegerField()
        created_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "downsell_mark"
            indexes = ((("lead_id", "position"), True),)

    db.create_tables([DownsellMark])
    db.execute_sql(
        'INSERT INTO "downsell_mark" ("lead_id", "position", "created_at") '
        'SELECT "lead_id", "position", MIN("created_at") FROM "followup" WHERE "kind" = \'downsell\' '
        'GROUP BY "lead_id", "position"'
    )
