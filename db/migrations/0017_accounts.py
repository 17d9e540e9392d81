"""Seller accounts: `account` (slug, e-mail, role, state, password hash), and the account that owns
each gateway, bot and pool (`account_id`). Everything configured before belongs to the account
`default`, made here: the operator gives it an e-mail (`ops accounts`), or moves its bots into
sellers' accounts by applying their files there.

Frozen column definitions as they were when this migration was written (see 0001)."""

import datetime as dt

from peewee import AutoField, CharField, DateTimeField, ForeignKeyField, Model


def up(migrator, db):
    class Account(Model):
        id = AutoField()
        slug = CharField(max_length=64, unique=True)
        email = CharField(max_length=254, null=True, unique=True)
        role = CharField(max_length=16, default="seller")
        state = CharField(max_length=16, default="active")
        password_hash = CharField(max_length=255, null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "account"

    db.create_tables([Account])
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    default = Account.create(slug="default", created_at=now, updated_at=now)
    for table in ("gateway", "bot", "pool"):
        # (indexed: peewee indexes a foreign key it adds)
        migrator.migrate(
            migrator.add_column(
                table, "account_id", ForeignKeyField(Account, null=True, field=Account.id, on_delete="RESTRICT")
            )
        )
        db.execute_sql(f'UPDATE "{table}" SET "account_id" = {db.param}', (default.id,))
