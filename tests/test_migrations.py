"""The Alembic repository (``src/pixelmint/migrations``): one line of revisions, the ORM and the
migrations agree, every revision downgrades cleanly, and databases migrated before the squash
into ``0001_schema`` are adopted (at ``0009_app_grants``) or refused with a clear message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from pixelmint.kit.db import alembic_config, asyncpg_connect_kwargs, migrate

# The database's shape, from the catalog: what a downgrade must remove and an upgrade rebuild.
CATALOG = {
    "columns": """SELECT table_name, column_name, data_type, character_maximum_length, numeric_precision,
                         numeric_scale, column_default, is_nullable, is_identity
                    FROM information_schema.columns WHERE table_schema = 'public'""",
    "constraints": """SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c
                        JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "storage": """SELECT relname, reloptions::text FROM pg_class
                   WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL""",
    "functions": """SELECT proname, pg_get_function_arguments(oid), prosrc FROM pg_proc
                     WHERE pronamespace = 'public'::regnamespace""",
    "plans": "SELECT * FROM plans",
}


async def catalog(url: str) -> dict[str, set[tuple[object, ...]]]:
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        shape = {}
        for name, sql in CATALOG.items():
            if name == "plans" and not await conn.fetchval("SELECT to_regclass('plans') IS NOT NULL"):
                shape[name] = set()
                continue
            shape[name] = {tuple(row) for row in await conn.fetch(sql)}
        return shape
    finally:
        await conn.close()


async def set_revision(url: str, revision: str) -> None:
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()


async def revision_of(url: str) -> list[str]:
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        return [r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    finally:
        await conn.close()


def test_the_revisions_form_one_line() -> None:
    """``alembic revision`` refuses to run while the repository has several heads (or bases)."""
    scripts = ScriptDirectory.from_config(alembic_config("postgresql://unused/unused"))
    assert len(scripts.get_heads()) == 1, f"several heads: {scripts.get_heads()}; add a merge revision"
    assert len(scripts.get_bases()) == 1, f"several bases: {scripts.get_bases()}"


async def test_the_models_match_the_migrations(database_url: str) -> None:
    """Autogenerate finds nothing to do: the ORM (``pixelmint.tables``) and the migrations agree."""
    await asyncio.to_thread(command.check, alembic_config(database_url))


async def test_downgrade_to_base_removes_everything_and_upgrade_rebuilds_it(database_url: str) -> None:
    at_head = await catalog(database_url)
    assert ("pixelmint_claim_jobs",) in {row[:1] for row in at_head["functions"]} and len(at_head["plans"]) == 4

    # Alembic runs its async env in its own event loop: off this one.
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "base")
    left = await catalog(database_url)
    assert {row[0] for row in left["columns"]} == {"alembic_version"}
    assert not left["functions"] and not left["storage"]
    await asyncio.to_thread(migrate, database_url)
    assert await catalog(database_url) == at_head


async def test_a_database_at_the_last_revision_before_the_squash_is_adopted(database_url: str) -> None:
    """A database migrated up to 0009_app_grants before the squash has 0001_schema's schema (as
    pg_dump showed when the squash was made): it is re-stamped, then the later revisions run."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    before = await catalog(database_url)
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0001_schema")
    await set_revision(database_url, "0009_app_grants")
    await asyncio.to_thread(migrate, database_url)
    assert await revision_of(database_url) == [head]
    assert await catalog(database_url) == before


@pytest.mark.parametrize("revision", ["0001", "0007_merge", "0008_claim_ready"])
async def test_a_database_at_an_older_revision_before_the_squash_is_refused(database_url: str, revision: str) -> None:
    await set_revision(database_url, revision)
    with pytest.raises(CommandError, match=f"at revision {revision}, from before the migrations were squashed"):
        await asyncio.to_thread(migrate, database_url)
    assert await revision_of(database_url) == [revision]


@pytest.mark.slow
def test_pixelmint_db_upgrade_adopts_a_database_from_before_the_squash(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    command.downgrade(alembic_config(database_url), "0001_schema")
    asyncio.run(set_revision(database_url, "0009_app_grants"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_")}
    run = subprocess.run([sys.executable, "-m", "pixelmint.cli", "db", "upgrade"], capture_output=True, text=True,
                         env={**env, "DATABASE_URL": database_url, "PIXELMINT_DATA_DIR": str(tmp_path)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "database is at head" in run.stdout
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert asyncio.run(revision_of(database_url)) == [head]
