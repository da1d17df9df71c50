#!/usr/bin/env python
"""100x the seed's scale: the hot paths on a database with 1,000,000 teams and 10,000,000 finished
jobs against the same measurements on a nearly empty one, both seeded by this script in SQL.

Run: ``.venv/bin/python benchmarks/bench_scale.py --teams 10000`` (1/100 scale, minutes; without
``--teams``: 1,000,000, most of an hour of seeding on 2 cores, ~30 GB; ``DATABASE_URL`` as usual).

Both databases hold the same fixtures (teams to generate with, a team with a deep ledger, expired
images, queued jobs); ``scaled`` adds ``--teams`` teams with ``--jobs-per-team`` finished jobs each.
Measured on each: generate, deep history pages, claims, retention, the ledger check and the hot
statements' plans; printed as ratios. What and how: ``benchmarks/README.md``.
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

import harness
from bench_generate import BODY, MODEL_ID
from pixelmint.accounts import service as accounts
from pixelmint.bootstrap import prepare_database
from pixelmint.credits import history, ledger
from pixelmint.flows.retention import cleanup_expired
from pixelmint.jobs import queue
from pixelmint.jobs import service as jobs_service
from pixelmint.kit.db import Database, asyncpg_connect_kwargs, with_database
from pixelmint.storage import service as images
from pixelmint.storage.backend import LocalStorage
from queue_harness import FINISH_SQL, claim_rate

PARAMS = ('{"prompt": "p", "negativePrompt": null, "width": 512, "height": 512, "quality": "standard", '
          '"numImages": 1, "seed": 1, "modelKey": "business-headshot"}')
COST = Decimal("4.80")
SEED_SQL = Path(__file__).with_suffix(".sql")  # pg_temp.seed(tag, teams, plan, jobs, queued, expired)
# Put the retention fixture's swept images and expired jobs back for the next round's sweep.
RESET_RETENTION = """UPDATE images SET deleted_at = NULL WHERE team_id = (SELECT id FROM teams WHERE name = 'ret1');
UPDATE jobs SET state = 'succeeded' WHERE team_id = (SELECT id FROM teams WHERE name = 'ret1') AND state = 'expired'"""
CLAIM_STATS = """SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_time), 0) FROM pg_stat_user_functions
                 WHERE funcname = 'pixelmint_claim_jobs'"""
CLAIM_TEAMS = re.compile(r"SELECT array_agg\(s\.team_id\) INTO v_teams FROM \((.*?)\) s;", re.S)


async def build(admin_url: str, name: str, args: argparse.Namespace, scaled: bool) -> str:
    await harness.admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    await prepare_database(url)
    print(f"{name}:", flush=True)
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        conn.add_log_listener(lambda _conn, message: print(message.message, flush=True))  # seed's steps
        await conn.execute(SEED_SQL.read_text() + "SET synchronous_commit = off; SET maintenance_work_mem = '1GB';"
                           f"ALTER DATABASE \"{name}\" SET track_functions = 'pl';")  # ms per claim call
        try:  # no FK trigger per row (superuser only): the rows are consistent by construction
            await conn.execute("SET session_replication_role = replica")
        except asyncpg.PostgresError:
            print("  (not a superuser: FK checks run per row, seeding is slower)")
        parts = [("gen", 32, "enterprise", 0, 0, False), ("hist", 1, "enterprise", args.history_jobs, 0, False),
                 ("ret", 1, "enterprise", args.expired, 0, True),
                 ("q", args.queued_teams, "enterprise", 0, args.queued // args.queued_teams, False),
                 *([("bulk", args.teams, "pro", args.jobs_per_team, 0, False)] if scaled else [])]
        for tag, teams, plan, jobs, queued, expired in parts:
            print(f"  {tag}: {teams:,} {plan} teams, {teams * jobs:,} finished jobs, {teams * queued:,} queued")
            await conn.execute("SELECT pg_temp.seed($1, $2, $3, $4, $5, $6)", tag, teams, plan, jobs, queued, expired)
        t0 = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"  VACUUM (ANALYZE) {time.monotonic() - t0:.1f} s; database size {size}", flush=True)
    finally:
        await conn.close()
    return url


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
        job = (await queue.claim(s, worker_id="explain", demand=4, lease_seconds=30))[0]
        finish.append((FINISH_SQL, (job.id, "explain", job.attempt)))  # the claim loop's completion

    finish: list[tuple[str, tuple[object, ...]]] = []
    statements = await harness.recorded_calls(url, generate, deep_history, claim, retention)
    statements[-2:-2] = finish  # after the claim, before retention
    if match := CLAIM_TEAMS.search(claim_fn):  # the claim function's first statement: which teams
        statements.append((match.group(1).replace("p_demand", "4"), ()))
    found = await harness.explain(url, statements)
    return [(" ".join(sql.split())[:100], plan) for (sql, _), plan in zip(statements, found, strict=True)]


async def measure(url: str, args: argparse.Namespace, workdir: Path, wrk: bool, first: bool) -> dict[str, Any]:
    """Generate and the two histories through a ``pixelmint serve``, the ledger check, claims, the
    plans (first round), retention (later rounds first put the swept images back)."""
    out: dict[str, Any] = {}
    postmaster = await harness.find_postmaster(url)
    port = harness.free_port()
    no_limits = {"PIXELMINT_RATE_LIMIT_GENERATE": "", "PIXELMINT_RATE_LIMIT_GENERATE_TEAM": ""}
    proc = harness.start_server(url, workdir, port, 1, no_limits)
    base_url = f"http://127.0.0.1:{port}"
    try:
        await harness.checkpoint(url)
        keys = [f"genkey{n}" for n in range(1, 33)]
        api = await harness.api_load(wrk, base_url, "/api/v1/generate", 202, BODY, keys, workdir=workdir,
                                     cpu_keys=("server", "postgres"), meter=harness.CpuMeter(proc.pid, postmaster),
                                     clients=args.concurrency, seconds=args.seconds, warmup=args.warmup)
        out.update({"generate req/s": api.rate, "generate p50 ms": api.p50_ms, "generate p99 ms": api.p99_ms})
        for name, path, limit in (("credits", "/api/v1/credits/history", 50), ("generations", "/api/v1/generate/history", 20)):
            await harness.walk_pages(base_url, path, "histkey1", limit=limit)  # warm
            pages = await harness.walk_pages(base_url, path, "histkey1", limit=limit)
            deep = out[f"{name} history deep page ms"] = statistics.median(pages[len(pages) * 3 // 4:]) * 1000
            print(f"  {name} history: {len(pages)} pages of {limit}, median {statistics.median(pages) * 1000:.2f} ms, "
                  f"deepest quarter {deep:.2f} ms")
    finally:
        harness.stop_server(proc)
    if args.check_ledger and first:  # the seeded books and generate's holds (the claim loop settles none)
        print("  " + await harness.ledger_check(url))
    await harness.checkpoint(url)
    before = await harness.fetch_row(url, CLAIM_STATS)
    out["claim jobs/s"] = await claim_rate(url, args.claim_connections, args.claim_demand, seconds=args.seconds,
                                           warmup=args.warmup, postmaster=postmaster)
    after = await harness.fetch_row(url, CLAIM_STATS)
    print(f"  claims: {out['claim jobs/s']:,.0f} jobs/s ({args.claim_connections} connections x demand "
          f"{args.claim_demand}, each job completed; {(after[1] - before[1]) / max(1, after[0] - before[0]):.2f} ms "
          "in PostgreSQL per claim call)")
    if first:
        out["plans"] = await plans(url)
    else:
        await harness.admin_execute(url, RESET_RETENTION)
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
    wrk = harness.use_wrk(args.loadgen, None)
    pg = await harness.BenchPostgres.open("/tmp/pmscale")
    workdir = Path(tempfile.mkdtemp(prefix="/tmp/pmscalew"))
    names = {kind: f"pmscale_{kind}_{uuid.uuid4().hex[:6]}" for kind in ("empty", "scaled")}
    try:
        pg.tune(shared_buffers=args.shared_buffers, max_wal_size="8GB", checkpoint_timeout="30min")
        await pg.describe("shared_buffers")
        urls = {kind: await build(pg.url, name, args, kind == "scaled") for kind, name in names.items()}
        await harness.warn_if_machine_busy()
        runs: dict[str, list[dict[str, Any]]] = {"empty": [], "scaled": []}
        for round_no in range(args.rounds):  # empty first, then scaled first, …
            for kind in (["empty", "scaled"] if round_no % 2 == 0 else ["scaled", "empty"]):
                print(f"\nround {round_no + 1}, {kind} ({names[kind]}):", flush=True)
                runs[kind].append(await measure(urls[kind], args, workdir, wrk, first=round_no == 0))
        plan_text = [f"== {kind}: {sql}\n" + "\n".join(plan) for kind in urls for sql, plan in runs[kind][0]["plans"]]
        Path(args.plans).write_text("\n\n".join(plan_text) + "\n")
        print(f"\nplans on scaled, key lines (all of both databases in {args.plans}):")
        for sql, plan in runs["scaled"][0]["plans"]:
            print(f"  {sql}\n" + "\n".join(f"      {line}" for line in harness.plan_key_lines(plan)))
        print(f"\nsummary, best of {args.rounds} round(s) ({args.teams:,} teams x {args.jobs_per_team} finished jobs "
              f"vs empty; flat = 1.00, aim >= 0.80)\n{'':<34}{'empty':>10}{'scaled':>10}{'flat':>8}")
        for metric in (m for m in runs["empty"][0] if m != "plans"):
            best = min if " ms" in metric else max
            empty, scaled = (best(run[metric] for run in runs[kind]) for kind in ("empty", "scaled"))
            flat = empty / scaled if " ms" in metric else scaled / empty
            print(f"{metric:<34}{empty:>10.2f}{scaled:>10.2f}{flat:>8.2f}{'' if flat >= 0.8 else '  BELOW'}")
        return 0
    finally:
        for name in names.values():
            await harness.drop_database(pg.url, name)
        await pg.close()
        shutil.rmtree(workdir, ignore_errors=True)


OPTIONS = (  # flag, default, help
    ("--teams", 1_000_000, "teams of the scaled database"),
    ("--jobs-per-team", 10, "finished jobs per scaled team"),
    ("--queued", 100_000, "queued jobs in both databases"),
    ("--queued-teams", 10_000, "teams holding the queued jobs"),
    ("--history-jobs", 10_000, "finished jobs of the team whose histories are paged (x2 + 1 ledger rows)"),
    ("--expired", 20_000, "expired images the retention sweep deletes"),
    ("--rounds", 2, "rounds of measurements, alternating which database goes first; the best counts"),
    ("--seconds", 10, "measured seconds of generate and of claims"),
    ("--warmup", 2, "warm-up seconds before each"),
    ("--concurrency", 32, "generate clients (client i: team i)"),
    ("--claim-connections", 8, "connections of the claim loop"),
    ("--claim-demand", 4, "jobs asked per claim call"),
    ("--shared-buffers", "1GB", "the embedded server's shared_buffers"),
    ("--plans", "/tmp/pmscale-plans.txt", "where the plans of both databases go"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, default, text in OPTIONS:
        parser.add_argument(flag, type=type(default), default=default, help=f"{text} (default {default})")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--no-check-ledger", dest="check_ledger", action="store_false",
                        help="skip credits.service.check_ledger (after generate)")
    return parser.parse_args()


if __name__ == "__main__":
    harness.run_main(main, parse_args())
