"""Alembic environment: runs migrations over the async engine, one transaction per run."""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from pixelmint.tables import metadata

config = context.config
target_metadata = metadata

# The revisions squashed into 0001_schema (see its docstring). The last of them has its schema.
SQUASHED = {"0001", "0002_models", "0003_apps", "0004_billing", "0005_idempotency", "0006_provider_requests",
            "0007_merge", "0008_claim_ready", "0009_app_grants"}
LAST_SQUASHED, SQUASH = "0009_app_grants", "0001_schema"


def adopt_squashed_revision(connection) -> None:
    """Re-stamp a database migrated before the squash: at 0009_app_grants it has 0001_schema's
    schema; at an older revision it has not, and no revision here leads from it."""
    if not inspect(connection).has_table("alembic_version"):
        return
    stamped = set(connection.scalars(text("SELECT version_num FROM alembic_version")))
    if not stamped & SQUASHED:
        return
    if stamped != {LAST_SQUASHED}:
        raise CommandError(
            f"the database is at revision {', '.join(sorted(stamped))}, from before the migrations were squashed "
            f"into {SQUASH}: upgrade it to {LAST_SQUASHED} with a Pixelmint from before the squash "
            "(git history), or start from an empty database")
    connection.execute(text("UPDATE alembic_version SET version_num = :squash"), {"squash": SQUASH})


def do_run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        adopt_squashed_revision(connection)
        context.run_migrations()


async def run_async_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: sqlalchemy.url is not set")
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async_migrations())
