"""The worker's fixture: a fresh PostgreSQL database per test for procrastinate's tables (and, in
the kill test, the shared hub's schemas), dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from _hub_fixtures import POSTGRES_URL


@pytest.fixture
def jobs_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test (dropped afterwards); fails if PostgreSQL is down."""
    name = f"kswk_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"test_worker needs PostgreSQL at {POSTGRES_URL} (set KLAVIYO_SYNC_TEST_POSTGRES): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
