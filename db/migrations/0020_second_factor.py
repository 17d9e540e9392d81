"""The optional TOTP second factor (required for operators): `account.totp_secret` (encrypted),
`account.totp_step` (the last time step whose code was used: each code works once), and each
account's one-use recovery codes (`recovery_code`, kept as SHA-256).

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import AutoField, BigIntegerField, CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Account(Model):
        id = AutoField()

        class Meta:
            database = db
            table_name = "account"

    class RecoveryCode(Model):
        id = AutoField()
        account = ForeignKeyField(Account, on_delete="CASCADE", column_name="account_id")
        code_hash = CharField(max_length=64, unique=True)
        created_at = DateTimeField()
        used_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "recovery_code"

    migrator.migrate(
        migrator.add_column("account", "totp_secret", TextField(null=True)),
        migrator.add_column("account", "totp_step", BigIntegerField(null=True)),
    )
    db.create_tables([RecoveryCode])
