"""Accounts' keys to the HTTP API (`api_key`: kept as SHA-256, revoked never deleted).

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, Model


def up(migrator, db):
    class Account(Model):
        id = AutoField()

        class Meta:
            database = db
            table_name = "account"

    class ApiKey(Model):
        id = AutoField()
        account = ForeignKeyField(Account, on_delete="CASCADE", column_name="account_id")
        prefix = CharField(max_length=16)
        key_hash = CharField(max_length=64, unique=True)
        created_at = DateTimeField()
        revoked_at = DateTimeField(null=True)
        last_used_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_key"

    db.create_tables([ApiKey])
