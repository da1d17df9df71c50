#!/usr/bin/env python
"""Throughput of ``POST /api/v1/credits/consume`` on ONE team's balance (the hot row) against the
bare SQL transaction it stands on.

Run (about a minute with the defaults; wants ``wrk`` — ``apt-get install -y wrk`` — else it falls
back to a much costlier httpx load generator)::

    cd /work/main && .venv/bin/python benchmarks/bench_consume.py              # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_consume.py
    .venv/bin/python benchmarks/bench_consume.py --seconds 10 --py-spy /tmp/prof  # + server profile

What it does: gets a PostgreSQL (a fresh ``pixelmint_bench_<random>`` database on ``DATABASE_URL``,
else a throw-away embedded server), migrates it, creates one enterprise team with 10^9 credits
(10^8 consumes: it never runs out), registers one app whose price list has ``deck`` = 10 credits
and grants it the team, starts ``pixelmint serve --no-worker``, then measures, for ``--seconds``
after a ``--warmup``, with ``--concurrency`` (64) clients all charging that one team:

- bare (run first, so that its connections are gone before the server's pool grows): one request's
  database work with asyncpg on 64 connections, no HTTP, no SQLAlchemy, each in a loop:
  ``BEGIN``; ``SELECT apps`` (the service key's digest); ``SELECT app_grants`` (the team granted
  the app); ``SELECT app_operations`` (the price: no amount in the body); ``CONSUME`` (lock,
  update, ledger row); ``COMMIT`` (``bare_transaction``). The SELECTs are rendered from the same
  SQLAlchemy constructs as ``credits/apps.py``, ``CONSUME`` is the service's own text. These are
  exactly the statements one API request sends (no pre-ping, no SET, no NOTIFY; the rate limiter
  counts in memory; without an ``Idempotency-Key`` idempotency sends nothing): on the embedded
  server the benchmark checks it at start-up from PostgreSQL's statement log and stops (exit 2)
  if the two differ — keep ``bare_transaction`` in step when the endpoint changes. (With
  ``DATABASE_URL`` the check is skipped: it needs the server's log file.)
- API: ``POST /api/v1/credits/consume`` with ``Authorization: Bearer pms_…`` and body
  ``{"teamId": <team>, "operation": "deck"}`` (no ``Idempotency-Key``), 200 expected, load from
  ``wrk`` (one connection per thread; each thread stops after its first response past the window,
  so every charge the server made is counted) or, without wrk, an httpx generator.

The server's consume rate limits (600 and 1200 a minute by default) would turn nearly all of this
load into 429s: the server gets ``--rate-limit`` (default ``1000000/second``) for both instead, so
the limiter still counts every request but never refuses one; ``--rate-limit ""`` turns it off,
``--rate-limit keep`` leaves the settings alone.

It prints req/s or tx/s, p50 and p99 latency of each, the ratio API/bare throughput (project aim:
>= 0.5), where the CPU went and, from ``pg_stat_activity`` samples, what the database sessions and
the holder of the hot row's lock were doing. Last, it checks the books: the team's balance equals
the sum of its ledger deltas (and ``credits.service.check_ledger`` finds nothing), the consume
ledger rows written equal the API's 200s (warm-up included) + the committed bare transactions,
and the credits spent equal those rows times the price.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
from sqlalchemy import select

from harness import (
    ApiBench,
    CpuMeter,
    LoadError,
    Result,
    WaitSampler,
    api_load,
    check_rendering,
    checkpoint,
    connections,
    cpu_text,
    fmt_result,
    load_loop,
    positional,
    print_summary_header,
    render,
    run_main,
    start_profile,
    statement_check,
    summarize_profile,
    summary_row,
    to_dollar_params,
    use_wrk,
    warn_if_machine_busy,
)
from pixelmint.credits.apps import authorize_app, register_app
from pixelmint.credits.ledger import CONSUME
from pixelmint.credits.service import check_ledger
from pixelmint.credits.tables import App, AppGrant, AppOperation
from pixelmint.flows.teams import create_team
from pixelmint.kit.db import Database, asyncpg_connect_kwargs

OPERATION = "deck"
OPERATION_COST = Decimal("10")
TEAM_CREDITS = Decimal("1000000000")  # 10^8 consumes of 10 credits: never runs out
AIM = 0.5
BARE_APP_NAME = "pixelmint-bench"  # application_name of the bare connections (the server's is "pixelmint")

# What one API request sends: the same constructs as credits/apps.py (authenticate_app,
# require_grant, price; the values are placeholders, only the rendered text is used) and CONSUME.
AUTH_SQL = render(select(App).where(App.key_hash == "", App.revoked_at.is_(None)))
GRANT_SQL = render(select(AppGrant.app_id).where(AppGrant.team_id == uuid.UUID(int=0),
                                                AppGrant.app_id == uuid.UUID(int=0)))
COST_SQL = render(select(AppOperation.cost).where(AppOperation.app_id == uuid.UUID(int=0),
                                                  AppOperation.operation == ""))
CONSUME_SQL, CONSUME_ARGS = to_dollar_params(CONSUME.text)


@dataclass(frozen=True)
class Target:
    team_id: uuid.UUID
    app_id: uuid.UUID
    service_key: str

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(self.service_key.encode()).hexdigest()

    @property
    def body(self) -> dict[str, str]:
        return {"teamId": str(self.team_id), "operation": OPERATION}


async def bare_transaction(conn: asyncpg.Connection, target: Target) -> None:
    """One consume, as the API does it: ``BEGIN``; authenticate the app; the team's grant; its
    price for the operation; ``CONSUME`` (which reports a missing team itself); ``COMMIT``."""
    async with conn.transaction():
        app = await conn.fetchrow(AUTH_SQL, target.key_hash)
        if app is None:
            raise LoadError("service key not found")
        if await conn.fetchval(GRANT_SQL, target.team_id, app["id"]) is None:
            raise LoadError("the team has not granted the app")
        cost = await conn.fetchval(COST_SQL, app["id"], OPERATION)
        if cost is None:
            raise LoadError(f"the app has no price for {OPERATION!r}")
        row = await conn.fetchrow(CONSUME_SQL, *positional(CONSUME_ARGS, {
            "team_id": target.team_id, "amount": cost, "reserved_delta": 0, "type": "consume",
            "operation": OPERATION, "job_id": None, "reservation_id": None, "app_id": app["id"],
            "user_id": None, "description": None, "metadata": "{}",
        }))
        if row is None or row["transaction_id"] is None:
            raise LoadError(f"consume refused: {dict(row) if row else None}")


# What the sessions and the hot row's lock holder are doing. Only CONSUME locks the balance row,
# so the lock is held by the session that ran CONSUME and has not finished COMMIT.
def statement_name(query: str) -> str:
    q = " ".join(query.split())
    if q.startswith("WITH bal AS") or "INSERT INTO credit_transactions" in q:
        return "CONSUME"
    if q.rstrip(";") in ("BEGIN", "COMMIT", "ROLLBACK"):
        return q.rstrip(";")
    match = re.match(r"SELECT (\w+)\.", q) or re.search(r"\bFROM (\w+)", q)
    return f"SELECT {match.group(1)}" if match else q[:20]


def holder_phase(kinds: list[str]) -> str:
    """What the session holding the balance row's lock is doing, in one sample."""
    if any(kind.startswith("idle in tx after CONSUME") for kind in kinds):
        return "waiting for the client to send COMMIT"
    for kind in kinds:
        if kind.endswith("(COMMIT)") or kind == "running COMMIT":
            return "WAL flush (COMMIT)" if kind.startswith("WAL") else f"committing: {kind}"
    if "running CONSUME" in kinds:
        return "running CONSUME"
    return "none visible (lock changing hands)"


async def create_target(url: str) -> Target:
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as session:
            team = await create_team(session, name="bench-consume", plan_code="enterprise",
                                     credits_amount=TEAM_CREDITS, free_generations=0)
            app = await register_app(session, name="bench-consume-app", operations={OPERATION: OPERATION_COST})
            await authorize_app(session, team_id=team.team_id, app_id=app.app_id, granted_by="admin")
            return Target(team.team_id, app.app_id, app.service_key)
    finally:
        await db.dispose()


LEDGER_SQL = """
SELECT b.allocation_credits, b.bonus_credits, b.reserved_credits,
       l.allocation, l.bonus, l.reserved, l.rows, l.consumes, l.consumed
  FROM credit_balances b,
       (SELECT COALESCE(sum(allocation_delta), 0) AS allocation, COALESCE(sum(bonus_delta), 0) AS bonus,
               COALESCE(sum(reserved_delta), 0) AS reserved, count(*) AS rows,
               count(*) FILTER (WHERE type = 'consume' AND app_id = $2) AS consumes,
               COALESCE(sum(amount) FILTER (WHERE type = 'consume' AND app_id = $2), 0) AS consumed
          FROM credit_transactions WHERE team_id = $1) l
 WHERE b.team_id = $1
"""


async def ledger_state(url: str, target: Target) -> asyncpg.Record:
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        return await conn.fetchrow(LEDGER_SQL, target.team_id, target.app_id)
    finally:
        await conn.close()


async def check_books(url: str, target: Target, before: asyncpg.Record, api: Result, bare: Result) -> bool:
    """The team's balance equals its ledger, check_ledger is happy, and the consume rows written
    during the runs are the successes counted by the clients."""
    after = await ledger_state(url, target)
    balance = (after["allocation_credits"], after["bonus_credits"], after["reserved_credits"])
    sums = (after["allocation"], after["bonus"], after["reserved"])
    rows = after["consumes"] - before["consumes"]
    spent = ((before["allocation_credits"] + before["bonus_credits"])
             - (after["allocation_credits"] + after["bonus_credits"]))
    consumed = after["consumed"] - before["consumed"]
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as session:
            problems = await check_ledger(session)
    finally:
        await db.dispose()
    checks = [
        (balance == sums, f"balance = sum of ledger deltas: allocation/bonus/reserved {'/'.join(map(str, balance))} vs "
                          f"{'/'.join(map(str, sums))} over {after['rows']} ledger rows"),
        (rows == api.total_ok + bare.total_ok,
         f"consume rows written: {rows} = {api.total_ok} API 200s (warm-up and drain included) + {bare.total_ok} "
         f"bare commits = {api.total_ok + bare.total_ok}"),
        (spent == consumed == rows * OPERATION_COST,
         f"credits spent: {spent} = {rows} x {OPERATION_COST} (ledger amounts {consumed})"),
    ]
    for good, text in checks:
        print(f"  {text}  {'ok' if good else 'MISMATCH'}")
    print(f"  check_ledger: {'no problems' if not problems else f'{len(problems)} problems'}")
    for problem in problems[:10]:
        print(f"    {problem}")
    return all(good for good, _ in checks) and not problems


async def main(args: argparse.Namespace) -> int:
    check_rendering((CONSUME, CONSUME_SQL, CONSUME_ARGS))
    wrk = use_wrk(args.loadgen, args.py_spy)
    async with ApiBench("/tmp/pmc") as bench:
        target = await create_target(bench.url)
        rate_limits = {} if args.rate_limit == "keep" else {
            "PIXELMINT_RATE_LIMITCONSUME": args.rate_limit, "PIXELMINT_RATE_LIMIT_CONSUME_TEAM": args.rate_limit}
        await bench.serve(args.processes, rate_limits)
        max_connections = int((await bench.pg.describe("max_connections"))["max_connections"])
        print(f"server: pixelmint serve --no-worker on {bench.base_url} (pid {bench.proc.pid}, {args.processes} "
              f"process(es)); load generator: {'wrk' if wrk else 'httpx'}; {args.concurrency} clients on one team; "
              f"{args.seconds} s measured after {args.warmup} s warm-up; {os.cpu_count()} CPUs; consume rate "
              f"limit per key and per team: {args.rate_limit or 'none'}")
        await statement_check(bench, "/api/v1/credits/consume", target.body, target.service_key,
                              lambda conn: bare_transaction(conn, target), BARE_APP_NAME, statement_name)
        print(f"setup took {time.monotonic() - bench.t0:.1f} s")
        if args.concurrency + 5 > max_connections:
            print(f"WARNING: {args.concurrency} connections + a few more may exceed max_connections")
        await warn_if_machine_busy()
        before = await ledger_state(bench.url, target)
        load = {"clients": args.concurrency, "seconds": args.seconds, "warmup": args.warmup}

        def sampler(application_name: str) -> WaitSampler:
            return WaitSampler(bench.url, application_name, args.sample_interval, statement_name, holder_phase)

        print(f"\nhot: {args.concurrency} clients consume '{OPERATION}' ({OPERATION_COST} credits) from one team")
        # bare first: its connections are closed before the server's pool grows to the API's
        # concurrency (both at once could pass max_connections).
        await checkpoint(bench.url)
        async with connections(bench.url, args.concurrency, BARE_APP_NAME) as conns:
            bare = await load_loop(lambda i: bare_transaction(conns[i], target), meter=CpuMeter(None, bench.postmaster),
                                   sampler=sampler(BARE_APP_NAME), errors=(LoadError, asyncpg.PostgresError), **load)
        print(fmt_result("bare", bare))
        print("       " + cpu_text(bare.cpu, ("postgres", "bench"), rest=True))
        if bare.waits:
            print("       " + bare.waits)

        profile = Path(args.py_spy) / "api-consume.txt" if args.py_spy else None
        await checkpoint(bench.url)
        api = await api_load(
            wrk, bench.base_url, "/api/v1/credits/consume", 200, target.body, [target.service_key],
            workdir=bench.workdir, cpu_keys=("server", "postgres", "bench"), rest=True,
            meter=CpuMeter(bench.proc.pid, bench.postmaster), sampler=sampler("pixelmint"),
            on_measure_start=(lambda: start_profile(bench.proc.pid, profile, args.seconds)) if profile else None,
            **load)
        if profile:
            print(f"  server profile ({profile}):")
            print(summarize_profile(profile))
        ratio = api.rate / bare.rate if bare.rate else float("nan")
        print(f"  API/bare throughput: {ratio:.2f}  (aim >= {AIM:.2f})")

        print("\nbooks")
        books_ok = await check_books(bench.url, target, before, api, bare)

    print("\nsummary")
    print_summary_header()
    print(summary_row("hot", api, bare, ratio, "ok" if ratio >= AIM else f"below {AIM}"))
    print(f"books: {'ok' if books_ok else 'MISMATCH'}")
    return 1 if api.errors or bare.errors or not api.count or not bare.count or not books_ok else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="measured seconds per run (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds before each run (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto",
                        help="API load generator (auto: wrk if installed, else httpx)")
    parser.add_argument("--processes", type=int, default=1, help="API server processes (default 1)")
    parser.add_argument("--rate-limit", default="1000000/second",
                        help="the server's consume rate limit, per key and per team ('limits' syntax; '' = none; "
                        "'keep' = the server's settings; default 1000000/second: counted, never reached)")
    parser.add_argument("--sample-interval", type=float, default=0.2,
                        help="seconds between pg_stat_activity samples during the runs (0: off; default 0.2)")
    parser.add_argument("--py-spy", metavar="DIR", help="profile the server with py-spy during the measured API "
                        "run (collapsed stacks into DIR; slows the server, so the numbers are not comparable)")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main, parse_args())
