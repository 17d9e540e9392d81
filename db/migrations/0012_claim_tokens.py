"""A send's claim names its holder and carries a token (`outbound_message.claim`): a stale claim is
taken over by one compare-and-set, and a dead holder's claims are free at once.

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import CharField


def up(migrator, db):
    migrator.migrate(migrator.add_column("outbound_message", "claim", CharField(max_length=100, null=True)))
