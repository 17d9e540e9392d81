"""Versioned schema migrations (peewee's runner over db/migrations/), serialised across processes."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peewee import Database, PostgresqlDatabase, SqliteDatabase
from playhouse.migrations import Runner

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_ID = 0x6772696D  # "grim": one advisory lock for the whole schema


@contextmanager
def _exclusive(database: Database) -> Iterator[None]:
    """Two processes starting at once (ops/run's migrate and a test, say) must not race."""
    if isinstance(database, PostgresqlDatabase):
        database.execute_sql("SELECT pg_advisory_lock(%s)", (_PG_LOCK_ID,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (_PG_LOCK_ID,))
    elif isinstance(database, SqliteDatabase) and database.database not in ("", ":memory:"):
        with open(f"{database.database}.migrate-lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield
    else:
        yield


def migrate(database: Database) -> list[str]:
    """Apply pending migrations; returns their names (empty when the schema is current)."""
    with database.connection_context(), _exclusive(database):
        return Runner(database, str(MIGRATIONS_DIR)).up()


def pending(database: Database) -> list[str]:
    with database.connection_context():
        return [m.name for m in Runner(database, str(MIGRATIONS_DIR)).status() if not m.applied]
