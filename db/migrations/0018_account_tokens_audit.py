"""One-use links (`account_token`: invites and password resets, kept as SHA-256) and the audit log
(`audit_entry`: who did what to which object, when, from where, before and after).

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Account(Model):
        id = AutoField()

        class Meta:
            database = db
            table_name = "account"

    class AccountToken(Model):
        id = AutoField()
        kind = CharField(max_length=16)
        token_hash = CharField(max_length=64, unique=True)
        email = CharField(max_length=254, null=True)
        account = ForeignKeyField(Account, null=True, on_delete="CASCADE", column_name="account_id")
        created_at = DateTimeField()
        expires_at = DateTimeField()
        used_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "account_token"

    class AuditEntry(Model):
        id = AutoField()
        account = ForeignKeyField(Account, null=True, on_delete="SET NULL", column_name="account_id")
        actor = CharField(max_length=128)
        session = CharField(max_length=16, null=True)
        address = CharField(max_length=64, null=True)
        action = CharField(max_length=64)
        object = CharField(max_length=191, null=True)
        before = TextField(null=True)
        after = TextField(null=True)
        at = DateTimeField()

        class Meta:
            database = db
            table_name = "audit_entry"
            indexes = ((("account", "at"), False),)

    db.create_tables([AccountToken, AuditEntry])
