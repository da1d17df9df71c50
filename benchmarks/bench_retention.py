#!/usr/bin/env python
"""Retention cleanup throughput: ``flows.retention.cleanup_expired`` over 100,000 expired images
(rows AND objects) against a bare baseline measured in the same run.

Run (about a minute on a 2-core machine)::

    cd /work/main && .venv/bin/python benchmarks/bench_retention.py                 # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_retention.py
    .venv/bin/python benchmarks/bench_retention.py --images 20000 --rounds 1        # quicker

What it does: gets a PostgreSQL (a fresh ``pixelmint_bench_<random>`` database on ``DATABASE_URL``,
else a throw-away embedded server), migrates it and creates one team. Objects are **LocalStorage
files** in a temporary directory (``/tmp``; S3 deletes would measure moto, not our code). Then, for
each of ``--rounds`` rounds, it runs both contenders, each on a freshly built data set:

- set-up (not timed): ``TRUNCATE`` images and jobs; one ``INSERT … SELECT generate_series`` for the
  jobs (two images each, ``succeeded``) and one for ``--images`` expired images plus ``--fresh``
  unexpired ones, spread over 28 day directories; the objects are written as 100-byte files with
  plain ``os.open``/``os.write``; ``VACUUM ANALYZE``.
- **pixelmint**: ``cleanup_expired(db, LocalStorage, batch_size=--batch-size)`` — per batch one
  transaction with the advisory lock, ``FOR UPDATE SKIP LOCKED`` + ``UPDATE … RETURNING``,
  ``LocalStorage.delete_many`` (a thread hop, path checks), the jobs ``UPDATE``; through SQLAlchemy.
- **bare**: one asyncpg transaction: ``UPDATE images SET deleted_at = now() WHERE expires_at <=
  now() AND deleted_at IS NULL RETURNING job_id, storage_key``, ``os.unlink`` of every file in a
  loop, and the same jobs ``UPDATE`` over all job ids at once — the same work without batching,
  locking, thread hops or path checks (and holding 100,000 row locks in one transaction, which the
  service must not do).

Both are checked (every expired row marked, every file gone, every job expired, the unexpired
images untouched). It prints seconds and images/second of each and the ratio pixelmint/bare
(rounds alternate which contender goes first; the best round of each counts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from harness import BenchPostgres
from pixelmint.bootstrap import prepare_database
from pixelmint.flows.retention import cleanup_expired
from pixelmint.flows.teams import create_team
from pixelmint.kit.db import Database, asyncpg_connect_kwargs
from pixelmint.storage.backend import LocalStorage

FILE_BYTES = b"\x89PNG" + b"x" * 96

_INSERT_JOBS = """
INSERT INTO jobs (id, team_id, type, state, params, provider, estimated_credits, charged_credits, finished_at)
SELECT md5('job' || g)::uuid, $1, 'image_generation', 'succeeded', '{}'::jsonb, 'procedural', 4.80, 4.80, now()
  FROM generate_series(0, $2::int - 1) AS g
"""

# Images 0 .. expired-1 expired (expires_at in the past), the rest expire in 30 days.
_INSERT_IMAGES = """
INSERT INTO images (id, team_id, job_id, storage_key, width, height, size_bytes, seed, created_at, expires_at)
SELECT md5('img' || g)::uuid, $1::uuid, md5('job' || (g / 2))::uuid,
       'generated/' || $1::text || '/2026/08/' || lpad((g % 28 + 1)::text, 2, '0') || '/' || md5('img' || g)::uuid || '.png',
       64, 64, 100, g, now() - interval '100 days',
       CASE WHEN g < $2::int THEN now() - interval '10 days' + g * interval '1 ms' ELSE now() + interval '30 days' END
  FROM generate_series(0, $2::int + $3::int - 1) AS g
RETURNING storage_key
"""

_BARE_IMAGES = """
UPDATE images SET deleted_at = now() WHERE expires_at <= now() AND deleted_at IS NULL RETURNING job_id, storage_key
"""

_BARE_JOBS = """
UPDATE jobs AS j SET state = 'expired'
 WHERE j.id = ANY($1::uuid[]) AND j.state = 'succeeded'
   AND NOT EXISTS (SELECT 1 FROM images AS i WHERE i.job_id = j.id AND i.deleted_at IS NULL)
"""


async def build(conn: asyncpg.Connection, team_id: object, root: Path, *, expired: int, fresh: int) -> None:
    """A fresh data set: rows with one INSERT … SELECT generate_series each, and their files."""
    await conn.execute("TRUNCATE images, jobs CASCADE")
    await conn.execute(_INSERT_JOBS, team_id, (expired + fresh + 1) // 2)
    keys = [r["storage_key"] for r in await conn.fetch(_INSERT_IMAGES, team_id, expired, fresh)]
    for day in {str(Path(k).parent) for k in keys}:
        (root / day).mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for key in keys:
        fd = os.open(root / key, flags, 0o644)
        os.write(fd, FILE_BYTES)
        os.close(fd)
    await conn.execute("VACUUM ANALYZE images")
    await conn.execute("VACUUM ANALYZE jobs")


async def verify(conn: asyncpg.Connection, root: Path, *, expired: int, fresh: int) -> None:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE deleted_at IS NOT NULL) AS gone,
                  count(*) FILTER (WHERE deleted_at IS NULL AND expires_at > now()) AS kept
             FROM images""")
    assert (row["gone"], row["kept"]) == (expired, fresh), dict(row)
    files = sum(len(names) for _, _, names in os.walk(root))
    assert files == fresh, f"{files} files left, expected {fresh}"
    expected_jobs = expired // 2  # jobs whose two images both expired
    jobs = await conn.fetchval("SELECT count(*) FROM jobs WHERE state = 'expired'")
    assert jobs == expected_jobs, f"{jobs} jobs expired, expected {expected_jobs}"


async def run_pixelmint(url: str, root: Path, batch_size: int) -> float:
    db = Database.connect(url, pool_size=2)
    try:
        started = time.perf_counter()
        report = await cleanup_expired(db, LocalStorage(root, "bench"), batch_size=batch_size)
        elapsed = time.perf_counter() - started
    finally:
        await db.dispose()
    assert not report.lock_busy
    return elapsed


async def run_bare(conn: asyncpg.Connection, root: Path) -> float:
    started = time.perf_counter()
    async with conn.transaction():
        rows = await conn.fetch(_BARE_IMAGES)
        for row in rows:
            os.unlink(root / row["storage_key"])
        await conn.execute(_BARE_JOBS, list({row["job_id"] for row in rows}))
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    pg: BenchPostgres | None = None
    workdir = Path(tempfile.mkdtemp(prefix="/tmp/pmbr"))
    try:
        pg = await BenchPostgres.open("/tmp/pmb")
        url = pg.url
        where = f"database {pg.bench_db} on DATABASE_URL" if pg.bench_db else "embedded PostgreSQL"
        await prepare_database(url)
        db = Database.connect(url, pool_size=1)
        async with db.transaction() as session:
            team = await create_team(session, name="bench", plan_code="basic", credits_amount=None, free_generations=0)
        await db.dispose()

        fs = subprocess.run(["stat", "-f", "-c", "%T", str(workdir)], capture_output=True, text=True).stdout.strip()
        print(f"retention cleanup: {args.images:,} expired images (+{args.fresh:,} unexpired, untouched), "
              f"LocalStorage files in {workdir} ({fs or '?'}), {where}, batch size {args.batch_size}")
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
        best: dict[str, float] = {}
        try:
            for round_no in range(args.rounds):
                order = ["pixelmint", "bare"] if round_no % 2 == 0 else ["bare", "pixelmint"]
                for name in order:
                    root = workdir / f"{name}-{round_no}"
                    t0 = time.perf_counter()
                    await build(conn, team.team_id, root, expired=args.images, fresh=args.fresh)
                    setup = time.perf_counter() - t0
                    if name == "pixelmint":
                        elapsed = await run_pixelmint(url, root, args.batch_size)
                    else:
                        elapsed = await run_bare(conn, root)
                    await verify(conn, root, expired=args.images, fresh=args.fresh)
                    best[name] = min(best.get(name, float("inf")), elapsed)
                    print(f"  round {round_no + 1} {name:9s} {elapsed:6.2f} s  {args.images / elapsed:9,.0f} images/s"
                          f"   (set-up {setup:.1f} s, not timed)")
        finally:
            await conn.close()
        ours, bare = best["pixelmint"], best["bare"]
        print(f"best: pixelmint {args.images / ours:,.0f} images/s ({ours:.2f} s), "
              f"bare {args.images / bare:,.0f} images/s ({bare:.2f} s)")
        print(f"ratio pixelmint/bare throughput: {bare / ours:.2f}")
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
        if pg is not None:
            await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000, help="expired images to clean up")
    parser.add_argument("--fresh", type=int, default=10_000, help="unexpired images that must stay")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both contenders (order alternates)")
    asyncio.run(main(parser.parse_args()))
