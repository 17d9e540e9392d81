"""The database proxy, initialised once from DATABASE_URL, and the transaction helpers around it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from peewee import Database, DatabaseProxy, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

db = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",  # durable across process crashes; WAL keeps commits cheap
    "foreign_keys": 1,
    "busy_timeout": 10_000,
    "cache_size": -16_000,
}


def utcnow() -> dt.datetime:
    """Naive UTC: every timestamp column holds UTC, on SQLite and PostgreSQL alike."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def make_database(url: str, *, pooled: bool = True) -> Database:
    """A peewee database for a `sqlite:///path` or `postgresql://user:pass@host:port/db` URL."""
    parsed = urlparse(url)
    scheme = parsed.scheme.split("+")[0]
    if scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path, as in peewee's db_url.
        path = url.split(":///", 1)[1] if ":///" in url else ""
        path = path.split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if pooled and path and path != ":memory:":
            # Closing a connection gives it back: reopening one per message costs more than the
            # message, and in WAL mode the last connection to close also checkpoints the log.
            return PooledSqliteDatabase(
                path,
                pragmas=SQLITE_PRAGMAS,
                check_same_thread=False,
                returning_clause=True,
                max_connections=64,
                stale_timeout=600,
                timeout=10,
            )
        return SqliteDatabase(
            path or ":memory:", pragmas=SQLITE_PRAGMAS, check_same_thread=False, returning_clause=True
        )
    if scheme in ("postgres", "postgresql"):
        # peewee's db_url keeps every ?key=value (sslmode=require, sslrootcert=..., application_name)
        # for psycopg2; user and password are taken percent-decoded, which it does not do.
        params: dict[str, Any] = {**parse_db_url(url.replace(parsed.scheme + "://", "postgresql://", 1))}
        name = params.pop("database", "") or ""
        params["host"] = parsed.hostname or "127.0.0.1"
        params["port"] = parsed.port or 5432
        params["user"] = unquote(parsed.username) if parsed.username else None
        params["password"] = unquote(parsed.password) if parsed.password else None
        params.setdefault("connect_timeout", 5)
        params = {k: v for k, v in params.items() if v is not None}
        if pooled:
            pool = {k: params.pop(k, default) for k, default in
                    (("max_connections", 64), ("stale_timeout", 300), ("timeout", 10))}  # fmt: skip
            return PooledPostgresqlDatabase(name, **pool, **params)
        return PostgresqlDatabase(name, **params)
    raise ValueError(f"DATABASE_URL: unsupported scheme {parsed.scheme!r} (use sqlite:/// or postgresql://)")


def init_db(url: str | None = None) -> Database:
    """Point the proxy at the configured database; safe to call more than once with the same URL."""
    import settings

    url = url or settings.DATABASE_URL
    if db.obj is not None and getattr(db.obj, "_grimbots_url", None) == url:
        return db.obj  # type: ignore[no-any-return]
    database = make_database(url)
    database._grimbots_url = url  # type: ignore[attr-defined]
    db.initialize(database)
    return database


def is_sqlite() -> bool:
    return isinstance(db.obj, SqliteDatabase)


def json_text(column: str, key: str) -> str:
    """SQL for the text at `key` of a JSON document kept in a text column (`key`: a fixed name of
    [a-z_], never user input), on SQLite and PostgreSQL alike."""
    assert key.replace("_", "").isalpha() and key.islower(), key
    if is_sqlite():
        return f"json_extract({column}, '$.{key}')"
    return f"({column}::json ->> '{key}')"


@contextmanager
def transaction() -> Iterator[None]:
    """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE), so two
    writers queue on busy_timeout instead of failing when one upgrades a read lock."""
    if is_sqlite() and not db.in_transaction():
        with db.atomic("IMMEDIATE"):
            yield
    else:
        with db.atomic():
            yield
