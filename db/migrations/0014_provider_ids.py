"""A sent message's id at its provider (`outbound_message.provider_id`: the Cloud API's wamid,
Evolution's key id), indexed: a `failed` status webhook names the message by it.

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import CharField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("outbound_message", "provider_id", CharField(max_length=128, null=True)),
        migrator.add_index("outbound_message", ("provider_id",), False),
    )
