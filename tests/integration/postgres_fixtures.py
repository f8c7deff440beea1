"""A schema of its own, in the PostgreSQL the tests run against, for each test.

``SQLSTREAM_TEST_POSTGRES`` names the server (default: the local one, user postgres,
database test); tests skip when it does not answer (and fail on CI, which runs it).
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

__all__ = ["POSTGRES_URL", "pg_schema"]

POSTGRES_URL = os.environ.get("SQLSTREAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_schema():
    """(connection in autocommit, schema name); the schema is dropped after the test."""
    try:
        conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        if os.environ.get("CI"):  # CI machines run PostgreSQL: a missing one is a failure there
            raise
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {error}")
    name = f"sqlstream_test_{uuid.uuid4().hex[:12]}"
    conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield conn, name
    finally:
        conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        conn.close()
