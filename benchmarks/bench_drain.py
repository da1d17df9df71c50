#!/usr/bin/env python
"""Drain throughput of the job queue: real ``Worker`` processes against the bare claim/complete SQL.

Run (about 3-4 minutes with the defaults on a 2-core machine)::

    cd /work/main && .venv/bin/python benchmarks/bench_drain.py               # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_drain.py
    .venv/bin/python benchmarks/bench_drain.py --jobs 4000 --teams 40 --processes 1,2   # quick
    .venv/bin/python benchmarks/bench_drain.py --py-spy /tmp/prof     # + worker profiles (slower)

Scenario: ``--teams`` teams (20 % enterprise = 10 jobs at a time, 40 % pro = 3, 40 % basic = 1),
``--jobs`` queued no-op jobs spread evenly, drained by real ``Worker`` processes (``--processes``)
and by the bare claim/complete loop (``--bare``), each run from a copy of one template database.
Exit status 1 if a run lost or cancelled a job or broke a plan limit. What is measured and how to
read the output: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import os
import secrets
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from harness import (
    BenchPostgres,
    Recording,
    drop_database,
    find_postmaster,
    pg_settings,
    py_spy_executable,
    recording,
    run_main,
    warn_if_machine_busy,
)
from pixelmint.kit.db import Database, asyncpg_connect_kwargs
from queue_harness import (
    BareDrain,
    Run,
    Setup,
    bare_run,
    build_template,
    create_plan_teams,
    fresh_database,
    print_summary,
    worker_run,
)

PLANS = (("enterprise", 10, 0.2), ("pro", 3, 0.4), ("basic", 1, 0.4))  # code, limit, share of teams
JOB_TYPE = "image_generation"
NOOP_PARAMS = (  # tests/helpers.py NOOP_PARAMS
    '{"prompt": "p", "negativePrompt": null, "width": 64, "height": 64, "quality": "standard", '
    '"numImages": 1, "seed": 1, "modelKey": "business-headshot"}'
)
EMBEDDED_MAX_CONNECTIONS = 400

# ------------------------------------------------------------------------------------------------
# The bare SQL. The claim is Worker._claim_available's statement as SQLAlchemy's asyncpg dialect
# renders it; the completion is *recorded* at start-up (capture_completion): one real
# ``queue.mark_succeeded`` through SQLAlchemy, every statement and its parameters, which the bare
# loop then replays per job with that job's values. So the bare loop sends what the worker sends
# even while queue.py changes.

CLAIM_SQL = "SELECT * FROM pixelmint_claim_jobs($1, $2, $3)"
CHECK_WORKER = "sqlcheck-worker"
CHECK_ATTEMPT = 41  # distinctive, so that the recorded parameters can be told apart


async def populate(url: str, *, teams: int, jobs: int) -> tuple[dict[uuid.UUID, str], int]:
    """The teams (``PLANS``) and ``jobs`` queued no-op jobs spread evenly over them, ``has_ready`` raised."""
    plan_of = await create_plan_teams(url, teams, PLANS, "drain")
    team_ids = list(plan_of)
    per_team = [jobs // teams + (1 if i < jobs % teams else 0) for i in range(teams)]
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        async with conn.transaction():
            await conn.execute(
                """
                INSERT INTO jobs (team_id, type, params, provider, estimated_credits, reference_model_id, created_at)
                SELECT t.id, $4, CAST($3 AS jsonb), 'procedural', 0, 'business-headshot', clock_timestamp()
                  FROM unnest($1::uuid[], $2::int[]) AS t(id, n), generate_series(1, t.n)
                """,
                team_ids, per_team, NOOP_PARAMS, JOB_TYPE,
            )
            await conn.execute("UPDATE team_dispatch SET has_ready = true WHERE team_id = ANY($1::uuid[])", team_ids)
    finally:
        await conn.close()
    return plan_of, sum(per_team)


async def capture_completion(setup: Setup) -> Recording:
    """Claim one job and finish it with the real ``queue.mark_succeeded`` through SQLAlchemy on a
    scratch copy of the template, recording every statement and parameter sent; check the claim
    statement is CLAIM_SQL."""
    from pixelmint.jobs import queue

    name, url = await fresh_database(setup, "sqlcheck")
    db = Database.connect(url, pool_size=1)
    try:
        with recording(db.engine) as claim_sent:
            async with db.transaction() as session:
                jobs = await queue.claim(session, worker_id=CHECK_WORKER, demand=1, lease_seconds=30)
        job_id = jobs[0].id
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
        try:
            await conn.execute("UPDATE jobs SET attempt = $2 WHERE id = $1", job_id, CHECK_ATTEMPT)
            await conn.execute("UPDATE job_attempts SET attempt = $2 WHERE job_id = $1", job_id, CHECK_ATTEMPT)
        finally:
            await conn.close()
        with recording(db.engine) as sent:
            async with db.transaction() as session:
                done = await queue.mark_succeeded(session, queue.Fence(job_id, CHECK_WORKER, CHECK_ATTEMPT), result={})
        if done is None or done.state != "succeeded":
            raise SystemExit(f"queue.mark_succeeded did not finish the scratch job: {done}")
    finally:
        await db.dispose()
        await drop_database(setup.admin_url, name)
    if [" ".join(sql.split()) for sql, _ in claim_sent] != [CLAIM_SQL]:
        raise SystemExit(f"the worker's claim is no longer {CLAIM_SQL!r}: {claim_sent}")
    if not sent or "RETURNING" not in sent[0][0].upper():
        raise SystemExit(f"expected mark_succeeded to start with the fenced UPDATE … RETURNING: {sent[:1]}")
    return Recording.of(sent, job_id=job_id, worker_id=CHECK_WORKER, attempt=CHECK_ATTEMPT)


async def bare_drain(conn: asyncpg.Connection, i: int, state: BareDrain, *, demand: int, lease: float,
                     completion: Recording) -> None:
    """One bare connection: claim up to ``demand`` jobs, then per job the recorded completion
    transaction with its id, worker and attempt; a lost fence is a failure."""
    worker_id = f"bare{i}"
    while not state.all_done.is_set():
        jobs = await conn.fetch(CLAIM_SQL, worker_id, demand, lease)
        if not jobs:
            # Nothing claimable: every team with queued jobs is at its limit. Wait until a job
            # finishes (one waiter per finished job, as a slot-freed wake-up), or 50 ms.
            await state.wait_for_slot(0.05)
            continue
        for job in jobs:
            async with conn.transaction():
                fence = {"job_id": job["id"], "worker_id": worker_id, "attempt": job["attempt"]}
                if not await conn.fetch(completion.statements[0][0], *completion.args(0, **fence)):
                    state.failures.append(f"lost job {job['id']}")  # the fence did not hold
                    continue
                for index in range(1, len(completion.statements)):
                    await conn.execute(completion.statements[index][0], *completion.args(index, **fence))
            await state.finished_one()
        state.check_done()


async def main(args: argparse.Namespace) -> int:
    processes = [int(p) for p in args.processes.split(",") if p.strip() and int(p) > 0]  # "0": bare runs only
    bare_specs = [tuple(int(x) for x in spec.lower().split("x")) for spec in args.bare.split(",") if spec.strip()]
    if any(len(spec) != 2 or min(spec) < 1 for spec in bare_specs) or not bare_specs:
        raise SystemExit("--bare wants CONNECTIONSxDEMAND specs such as 32x1,8x4")
    workdir = Path(tempfile.mkdtemp(prefix="/tmp/pmdw"))
    pg: BenchPostgres | None = None
    setup: Setup | None = None
    runs: list[Run] = []
    try:
        t_setup = time.monotonic()
        # The embedded server's 100 connections are too few for 4 workers × (32 + 3) + listeners.
        pg = await BenchPostgres.open("/tmp/pmd", max_connections=EMBEDDED_MAX_CONNECTIONS)
        admin_url = pg.url  # where CREATE/DROP DATABASE run from
        where = "fresh pmdrain_* databases on DATABASE_URL" if pg.bench_db else pg.where
        template = f"pmdrain_template_{secrets.token_hex(3)}"
        setup = await build_template(admin_url, template, PLANS,
                                     lambda url: populate(url, teams=args.teams, jobs=args.jobs))
        completion = await capture_completion(setup)
        settings = await pg_settings(admin_url, "server_version", "fsync", "synchronous_commit", "max_connections",
                                     "shared_buffers")
        postmaster = await find_postmaster(admin_url)
        needed = max([*processes, 1]) * (args.concurrency + 4) + 10
        if int(settings["max_connections"]) < needed:
            print(f"WARNING: max_connections={settings['max_connections']} < {needed} that {max([*processes, 1])} workers "
                  f"with concurrency {args.concurrency} may open; expect 'too many clients' errors")
        counts = collections.Counter(setup.teams.values())
        print(f"PostgreSQL {settings['server_version']} ({where}; fsync={settings['fsync']}, "
              f"synchronous_commit={settings['synchronous_commit']}, shared_buffers={settings['shared_buffers']})")
        print(f"{setup.jobs} no-op jobs over {len(setup.teams)} teams ("
              + ", ".join(f"{counts[c]} {c} limit {lim}" for c, lim, _ in PLANS)
              + f"); worker concurrency {args.concurrency} per process, {args.worker_loop} loop, log level "
              f"{args.log_level}, lease {args.lease_seconds:g} s; "
              f"bare (connections x claim demand): {', '.join(f'{c}x{d}' for c, d in bare_specs)}; "
              f"{os.cpu_count()} CPUs; setup took {time.monotonic() - t_setup:.1f} s")
        print(f"bare completion, recorded from queue.mark_succeeded ({len(completion.statements)} statements in "
              f"BEGIN … COMMIT): {completion.describe()}")
        await warn_if_machine_busy()

        plan = [("worker", (p, 0)) for p in processes] + [("bare", spec) for spec in bare_specs]
        for kind, (n, demand) in plan:
            if kind == "worker":
                print(f"\nWorker x{n}: {n} process(es) x concurrency {args.concurrency} "
                      f"= {n * args.concurrency} slots", flush=True)
                run = await worker_run(setup, args, n, JOB_TYPE, workdir, postmaster)
            else:
                print(f"\nbare {n}x{demand}: {n} asyncpg connections, claim demand {demand}", flush=True)
                run = await bare_run(
                    setup, f"bare {n}x{demand}", f"b{n}x{demand}", n, n * demand,
                    lambda conn, i, state, d=demand: bare_drain(conn, i, state, demand=d, lease=args.lease_seconds,
                                                                completion=completion),
                    prepare=[CLAIM_SQL, *(statement for statement, _ in completion.statements)],
                    timeout=args.timeout, postmaster=postmaster)
            print("\n".join(run.report), flush=True)
            runs.append(run)

        print_summary(runs, args.concurrency)
        return 0 if all(r.ok for r in runs) else 1
    finally:
        if setup is not None:
            await drop_database(setup.admin_url, setup.template)
        if pg is not None:
            await pg.close()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain per run (default 20000)")
    parser.add_argument("--teams", type=int, default=100, help="teams, 20%% enterprise / 40%% pro / 40%% basic "
                        "(default 100)")
    parser.add_argument("--processes", default="1,2,4", help="worker process counts to run (default 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=32, help="Worker slots per process (default 32)")
    parser.add_argument("--log-level", default="info", help="worker structlog level (default info, the "
                        "production default: one line per job; 'warning' shows its cost)")
    parser.add_argument("--worker-loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop of "
                        "the worker processes (default asyncio, what `pixelmint worker` runs)")
    parser.add_argument("--lease-seconds", type=float, default=30.0, help="worker lease (default 30, the "
                        "production default; heartbeats run every lease/3 s, rescues every lease/2 s)")
    parser.add_argument("--bare", default="8x4,2x16", help="bare runs as CONNECTIONSxDEMAND: connections "
                        "and the jobs each claim asks for (default 8x4,2x16; 32x1 is one connection per "
                        "worker slot)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take (default 300)")
    parser.add_argument("--py-spy", metavar="DIR", help="profile the worker processes with py-spy (raw stacks "
                        "into DIR; slows them, so the numbers are not comparable)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.py_spy and not py_spy_executable():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    run_main(main, arguments)
