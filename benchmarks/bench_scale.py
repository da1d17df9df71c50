#!/usr/bin/env python
"""100x the seed's scale: the hot paths on a database with 1,000,000 teams and 10,000,000 finished
jobs against the same measurements on a nearly empty one, both seeded by this script in SQL.

Run (full scale: about an hour of seeding on 2 cores and ~40 GB of disk; 1/100 scale: a minute)::

    .venv/bin/python benchmarks/bench_scale.py --teams 10000          # 1/100 scale
    .venv/bin/python benchmarks/bench_scale.py                        # 1,000,000 teams
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_scale.py --teams 10000

Both databases (``empty``, ``scaled``) hold the same fixtures: 32 enterprise teams to generate
with, one team with ``--history-jobs`` finished jobs (its ledger paged deep), one with
``--expired`` expired images, and ``--queued`` queued jobs over ``--queued-teams`` teams; ``scaled``
adds ``--teams`` teams with ``--jobs-per-team`` finished jobs each (a reservation, a reserve and a
capture ledger row, an attempt and an image each). Measured on each: generate, claim, history
pages, retention; the ratios, the plans and the ledger check. How: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import statistics
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench_generate import BODY, MODEL_ID
from harness import (
    BenchPostgres,
    CpuMeter,
    admin_execute,
    api_load,
    checkpoint,
    connections,
    drop_database,
    explain,
    find_postmaster,
    free_port,
    load_loop,
    plan_key_lines,
    recorded_calls,
    run_main,
    session,
    start_server,
    stop_server,
    use_wrk,
    warn_if_machine_busy,
)
from pixelmint.accounts import service as accounts
from pixelmint.bootstrap import prepare_database
from pixelmint.credits import history, ledger
from pixelmint.credits.service import check_ledger
from pixelmint.flows.retention import cleanup_expired
from pixelmint.jobs import queue
from pixelmint.jobs import service as jobs_service
from pixelmint.kit.db import Database, asyncpg_connect_kwargs, with_database
from pixelmint.storage import service as images
from pixelmint.storage.backend import LocalStorage

PARAMS = ('{"prompt": "p", "negativePrompt": null, "width": 512, "height": 512, "quality": "standard", '
          '"numImages": 1, "seed": 1, "modelKey": "business-headshot"}')
COST = Decimal("4.80")
SEED_SQL = Path(__file__).with_suffix(".sql")  # pg_temp.seed(tag, teams, plan, jobs, queued, expired)
CLAIM = "SELECT id, attempt FROM pixelmint_claim_jobs($1, $2, $3)"
# The worker's completion, reduced to the queue rows (the queued jobs hold no credits).
FINISH = """
WITH j AS (UPDATE jobs SET state = 'succeeded', finished_at = now(), progress = 100, locked_by = NULL,
                           lease_expires_at = NULL
            WHERE id = $1 AND locked_by = $2 AND attempt = $3 AND state = 'running' RETURNING id, attempt)
UPDATE job_attempts a SET finished_at = now(), outcome = 'succeeded' FROM j WHERE a.job_id = j.id AND a.attempt = j.attempt
"""
CLAIM_TEAMS = re.compile(r"SELECT array_agg\(s\.team_id\) INTO v_teams FROM \((.*?)\) s;", re.S)


async def seed(conn: asyncpg.Connection, tag: str, teams: int, plan: str, *, jobs: int = 0, queued: int = 0,
               expired: bool = False) -> None:
    print(f"  {tag}: {teams:,} {plan} teams, {teams * jobs:,} finished jobs, {teams * queued:,} queued", flush=True)
    await conn.execute("SELECT pg_temp.seed($1, $2, $3, $4, $5, $6)", tag, teams, plan, jobs, queued, expired)


async def build(admin_url: str, name: str, args: argparse.Namespace, scaled: bool) -> str:
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    await prepare_database(url)
    print(f"{name}:", flush=True)
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        conn.add_log_listener(lambda _conn, message: print(message.message, flush=True))  # seed's steps
        await conn.execute(SEED_SQL.read_text() + "SET synchronous_commit = off; SET maintenance_work_mem = '1GB';")
        try:  # no FK trigger per row (superuser only): the rows are consistent by construction
            await conn.execute("SET session_replication_role = replica")
        except asyncpg.PostgresError:
            print("  (not a superuser: FK checks run per row, seeding is slower)")
        await seed(conn, "gen", 32, "enterprise")
        await seed(conn, "hist", 1, "enterprise", jobs=args.history_jobs)
        await seed(conn, "ret", 1, "enterprise", jobs=args.expired, expired=True)
        await seed(conn, "q", args.queued_teams, "enterprise", queued=args.queued // args.queued_teams)
        if scaled:
            await seed(conn, "bulk", args.teams, "pro", jobs=args.jobs_per_team)
        t0 = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"  VACUUM (ANALYZE) {time.monotonic() - t0:.1f} s; database size {size}", flush=True)
    finally:
        await conn.close()
    return url


async def walk(base_url: str, path: str, limit: int, key: str) -> list[float]:
    """Follow ``nextCursor`` from the first page to the last; the seconds of each page."""
    seconds: list[float] = []
    cursor = None
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while True:
            t0 = time.perf_counter()
            response = await client.get(path, params={"limit": limit, **({"cursor": cursor} if cursor else {})})
            seconds.append(time.perf_counter() - t0)
            response.raise_for_status()
            if not (cursor := response.json()["nextCursor"]):
                return seconds


def deep_ms(seconds: list[float]) -> float:
    """Median ms of the deepest quarter of the pages."""
    return statistics.median(seconds[len(seconds) * 3 // 4:]) * 1000


async def measure_claims(url: str, args: argparse.Namespace, postmaster: int | None) -> float:
    """Jobs/s claimed by ``--claim-connections`` asyncpg connections, each claiming
    ``--claim-demand`` jobs a call and completing them (bench_drain's bare loop)."""
    claimed = 0
    async with connections(url, args.claim_connections) as conns:
        async def attempt(i: int) -> None:
            nonlocal claimed
            jobs = await conns[i].fetch(CLAIM, f"scale{i}", args.claim_demand, 30.0)
            for job in jobs:
                await conns[i].execute(FINISH, job["id"], f"scale{i}", job["attempt"])
            if window[0] <= time.monotonic() < window[1]:
                claimed += len(jobs)

        window = (time.monotonic() + args.warmup, time.monotonic() + args.warmup + args.seconds)
        await load_loop(attempt, clients=args.claim_connections, seconds=args.seconds, warmup=args.warmup,
                        meter=CpuMeter(None, postmaster))
    return claimed / args.seconds


async def plans(url: str) -> list[tuple[str, list[str]]]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the hot paths send, recorded from the services."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        team = await conn.fetchval("SELECT id FROM teams WHERE name = 'hist1'")
        ids = await conn.fetch("SELECT id FROM credit_transactions WHERE team_id = $1 ORDER BY id DESC", team)
        jobs = await conn.fetch("SELECT created_at, id FROM jobs WHERE team_id = $1 ORDER BY created_at DESC, id DESC",
                                team)
        claim_fn = await conn.fetchval("SELECT pg_get_functiondef('pixelmint_claim_jobs'::regproc)")
    finally:
        await conn.close()

    async def generate(s: Any) -> None:
        p = await accounts.authenticate(s, "genkey1")
        await queue.ensure_queue_capacity(s, team_id=p.team_id, limit=1000)
        await accounts.take_free_generation(s, p.user_id)
        job_id, reservation_id = uuid.uuid4(), uuid.uuid4()
        await ledger.reserve(s, team_id=p.team_id, amount=COST, reservation_id=reservation_id, expires_at=None,
                             job_id=job_id, operation="image_generation", user_id=p.user_id)
        await queue.enqueue(s, id=job_id, team_id=p.team_id, user_id=p.user_id, type="image_generation", priority=0,
                            params=PARAMS, reference_model_id=MODEL_ID, custom_model_id=None, custom_model_version=None,
                            provider="procedural", estimated_credits=COST, reservation_id=reservation_id,
                            is_free=False, max_attempts=3)

    async def deep_history(s: Any) -> None:
        p = await accounts.authenticate(s, "histkey1")
        await history.list_transactions(s, team, history.LedgerFilter(), limit=51, before_id=ids[len(ids) * 9 // 10]["id"])
        deep = jobs[len(jobs) * 9 // 10]
        page = await jobs_service.list_jobs(s, p, job_type="image_generation", limit=21, after=(deep[0], deep[1]))
        await images.images_for_jobs(s, [j.id for j in page])

    async def retention(s: Any) -> None:
        rows = await images.take_expired(s, now=dt.datetime.now(dt.UTC), limit=1000)
        await queue.expire_jobs(s, [r.job_id for r in rows])

    async def claim(s: Any) -> None:
        await queue.claim(s, worker_id="explain", demand=4, lease_seconds=30)

    statements = await recorded_calls(url, generate, deep_history, claim, retention)
    if match := CLAIM_TEAMS.search(claim_fn):  # the claim function's first statement: which teams
        statements.append((match.group(1).replace("p_demand", "4"), ()))
    return [(" ".join(sql.split())[:100], plan) for (sql, _), plan in zip(statements, await explain(url, statements),
                                                                           strict=True)]


async def measure(url: str, args: argparse.Namespace, workdir: Path, wrk: bool) -> dict[str, float]:
    """Generate and the two histories through a ``pixelmint serve``, then claims, then retention."""
    out: dict[str, float] = {}
    postmaster = await find_postmaster(url)
    port = free_port()
    proc = start_server(url, workdir, port, 1, {"PIXELMINT_RATE_LIMIT_GENERATE": "",
                                                "PIXELMINT_RATE_LIMIT_GENERATE_TEAM": ""})
    base_url = f"http://127.0.0.1:{port}"
    try:
        await checkpoint(url)
        api = await api_load(wrk, base_url, "/api/v1/generate", 202, BODY, [f"genkey{n}" for n in range(1, 33)],
                             workdir=workdir, cpu_keys=("server", "postgres"), meter=CpuMeter(proc.pid, postmaster),
                             clients=args.concurrency, seconds=args.seconds, warmup=args.warmup)
        out.update({"generate req/s": api.rate, "generate p50 ms": api.p50_ms, "generate p99 ms": api.p99_ms})
        for name, path, limit in (("credits", "/api/v1/credits/history", 50), ("generations", "/api/v1/generate/history", 20)):
            await walk(base_url, path, limit, "histkey1")  # warm
            pages = await walk(base_url, path, limit, "histkey1")
            out[f"{name} history deep page ms"] = deep_ms(pages)
            print(f"  {name} history: {len(pages)} pages of {limit}, median {statistics.median(pages) * 1000:.2f} ms, "
                  f"deepest quarter {deep_ms(pages):.2f} ms")
    finally:
        stop_server(proc)
    if args.check_ledger:  # the seeded books and generate's holds (the claim loop below settles none)
        t0 = time.monotonic()
        async with session(url) as s:
            problems = await check_ledger(s)
        print(f"  ledger check ({time.monotonic() - t0:.0f} s): " + (
            "ok, every balance equals the sum of its ledger" if not problems else
            f"{len(problems)} PROBLEMS: " + "; ".join(f"{p.kind} {p.detail}" for p in problems[:3])))
    await checkpoint(url)
    out["claim jobs/s"] = await measure_claims(url, args, postmaster)
    print(f"  claims: {out['claim jobs/s']:,.0f} jobs/s ({args.claim_connections} connections x demand "
          f"{args.claim_demand}, each job completed)")
    out["plans"] = await plans(url)  # type: ignore[assignment]
    db = Database.connect(url, pool_size=2)
    root = Path(tempfile.mkdtemp(prefix="/tmp/pmscale-ret"))
    try:
        t0 = time.perf_counter()
        report = await cleanup_expired(db, LocalStorage(root, "bench"), batch_size=1000)
        out["retention images/s"] = report.images_deleted / (time.perf_counter() - t0)
    finally:
        await db.dispose()
        shutil.rmtree(root, ignore_errors=True)
    print(f"  retention: {report.images_deleted:,} images, {report.jobs_expired:,} jobs expired, "
          f"{out['retention images/s']:,.0f} images/s")
    return out


async def main(args: argparse.Namespace) -> int:
    wrk = use_wrk(args.loadgen, None)
    pg = await BenchPostgres.open("/tmp/pmscale")
    workdir = Path(tempfile.mkdtemp(prefix="/tmp/pmscalew"))
    names = {kind: f"pmscale_{kind}_{uuid.uuid4().hex[:6]}" for kind in ("empty", "scaled")}
    try:
        pg.tune(shared_buffers=args.shared_buffers, max_wal_size="8GB", checkpoint_timeout="30min")
        await pg.describe("shared_buffers")
        urls = {kind: await build(pg.url, name, args, kind == "scaled") for kind, name in names.items()}
        await warn_if_machine_busy()
        results = {}
        for kind, url in urls.items():
            print(f"\n{kind} ({names[kind]}):", flush=True)
            results[kind] = await measure(url, args, workdir, wrk)
        plan_text = [f"== {kind}: {sql}\n" + "\n".join(plan) for kind in urls for sql, plan in results[kind]["plans"]]
        Path(args.plans).write_text("\n\n".join(plan_text) + "\n")
        print(f"\nplans on scaled, key lines (all of both databases in {args.plans}):")
        for sql, plan in results["scaled"]["plans"]:
            print(f"  {sql}\n" + "\n".join(f"      {line}" for line in plan_key_lines(plan)))
        print(f"\nsummary ({args.teams:,} teams x {args.jobs_per_team} finished jobs vs empty; "
              f"flat = 1.00, aim >= 0.80)\n{'':<30}{'empty':>10}{'scaled':>10}{'flat':>8}")
        flat = []
        for metric, empty in results["empty"].items():
            if metric == "plans":
                continue
            scaled = results["scaled"][metric]
            flat.append(empty / scaled if " ms" in metric else scaled / empty)
            print(f"{metric:<30}{empty:>10.2f}{scaled:>10.2f}{flat[-1]:>8.2f}{'' if flat[-1] >= 0.8 else '  BELOW'}")
        return 0
    finally:
        for name in names.values():
            await drop_database(pg.url, name)
        await pg.close()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", type=int, default=1_000_000, help="teams of the scaled database (default 1,000,000)")
    parser.add_argument("--jobs-per-team", type=int, default=10, help="finished jobs per scaled team (default 10)")
    parser.add_argument("--queued", type=int, default=100_000, help="queued jobs in both databases (default 100,000)")
    parser.add_argument("--queued-teams", type=int, default=10_000, help="teams holding them (default 10,000)")
    parser.add_argument("--history-jobs", type=int, default=10_000, help="finished jobs of the team whose histories "
                        "are paged (default 10,000: 20,001 ledger rows)")
    parser.add_argument("--expired", type=int, default=20_000, help="expired images retention sweeps (default 20,000)")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds of generate and of claims")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32, help="generate clients (client i: team i)")
    parser.add_argument("--claim-connections", type=int, default=8)
    parser.add_argument("--claim-demand", type=int, default=4, help="jobs asked per claim call (default 4)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--shared-buffers", default="1GB", help="embedded server's shared_buffers (default 1GB)")
    parser.add_argument("--plans", default="/tmp/pmscale-plans.txt", help="where the full plans go")
    parser.add_argument("--no-check-ledger", dest="check_ledger", action="store_false",
                        help="skip credits.service.check_ledger (after generate)")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main, parse_args())
