"""Loaded before the conftest (`-p tests.per_worker` in pyproject.toml), so the environment is set
before settings are read.

Under pytest-xdist (ops/test runs each database's suite in parallel workers) each worker has a
Redis database (REDIS_URL's number + the worker's), a database (the SQLite file or PostgreSQL
database named with the worker's id, created when missing) and a var dir of its own: every test
starts from an empty Redis database and empty tables. The processes end-to-end tests start
inherit them. Without xdist nothing changes."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


def _own_database(url: str, name: str) -> None:
    """Creates PostgreSQL database `name` on the server of `url` unless it exists."""
    import psycopg2

    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def _per_worker() -> None:
    """This xdist worker's own Redis database, database and var dir, in the environment."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL"):
        return  # not under xdist, or not under ops/test (the conftest says so)
    redis_url = urlsplit(os.environ["REDIS_URL"])
    number = int(redis_url.path.lstrip("/") or 0) + int(worker.removeprefix("gw"))
    os.environ["REDIS_URL"] = urlunsplit(redis_url._replace(path=f"/{number}"))
    url = os.environ["DATABASE_URL"]
    if url.startswith("sqlite:"):
        os.environ["DATABASE_URL"] = f"{url}.{worker}"
    else:
        parts = urlsplit(url)
        name = f"{parts.path.lstrip('/')}_{worker}"
        _own_database(url, name)
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    os.environ["GRIMBOTS_VAR_DIR"] = os.path.join(os.environ.get("GRIMBOTS_VAR_DIR", "var"), worker)


_per_worker()
