"""Shared fixtures: a real PostgreSQL database per test session.

Tests talk to the real server on 127.0.0.1:5432 (user postgres, trust auth).
On a developer's laptop without PostgreSQL those tests skip; in CI
(MEMBERLINK_REQUIRE_PG=1) a missing server is a failure, so a green CI always
means the PostgreSQL paths ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
REQUIRE_PG_ENV = "MEMBERLINK_REQUIRE_PG"


def _admin_connection():
    """An autocommit connection to the maintenance database, or None when unreachable."""
    import psycopg

    try:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres",
            connect_timeout=3, autocommit=True,
        )
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is unreachable: {exc}"
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{message}; {REQUIRE_PG_ENV}=1 requires it", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh database for this test session (one per xdist worker), dropped after."""
    from psycopg import sql

    admin = _admin_connection()
    name = f"memberlink_test_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        admin.execute(drop.format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def pg_fresh_url(pg_url: str) -> Iterator[str]:
    """URL of an empty schema in the session database, so each test starts with no tables.

    The schema is selected through libpq's `options` (search_path), which the
    warehouse honours because it only ever uses the current schema.
    """
    import psycopg
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield f"{pg_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real, temporary Prefect API (SQLite) for the tests that run flows in-process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
