"""Hardening: what each recorded update still owes (re-driven by the clock whatever Redis lost).

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import CharField, DateTimeField, IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("processed_update", "lead_id", IntegerField(null=True)),
        migrator.add_column("processed_update", "owed", CharField(max_length=32, null=True)),
        migrator.add_column("processed_update", "due_at", DateTimeField(null=True)),
        migrator.add_column("processed_update", "redrives", IntegerField(default=0)),
        migrator.add_column("processed_update", "done_at", DateTimeField(null=True)),
        migrator.add_index("processed_update", ("due_at",), False),
    )
