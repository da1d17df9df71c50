#!/usr/bin/env python
"""Throughput of ``POST /api/v1/credits/consume`` on ONE team's balance (the hot row) against the
bare SQL transaction it stands on.

Run (about a minute with the defaults; wants ``wrk`` — ``apt-get install -y wrk`` — else it falls
back to a much costlier httpx load generator)::

    cd /work/main && .venv/bin/python benchmarks/bench_consume.py              # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_consume.py
    .venv/bin/python benchmarks/bench_consume.py --seconds 10 --py-spy /tmp/prof  # + server profile

Scenario: ``--concurrency`` (64) clients charge ONE team ``deck`` (10 credits each) through
``POST /api/v1/credits/consume`` and, first, through the bare transaction (``bare_transaction``:
the statements one request sends, checked against the server's statement log at start-up); then
the team's books are checked. What is measured and how to read the output: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
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
    HotLock,
    LoadError,
    Result,
    add_py_spy_option,
    api_bare_ratio,
    api_bench_parser,
    check_rendering,
    checkpoint,
    connections,
    fetch_row,
    load_loop,
    positional,
    print_bare,
    print_checks,
    print_summary_header,
    render,
    run_main,
    session,
    statement_check,
    summary_row,
    to_dollar_params,
    use_wrk,
    warn_if_machine_busy,
)
from pixelmint.credits.apps import authorize_app, register_app
from pixelmint.credits.ledger import CONSUME, CONSUME_ALONE
from pixelmint.credits.service import check_ledger
from pixelmint.credits.tables import App, AppGrant, AppOperation
from pixelmint.flows.teams import create_team

OPERATION = "deck"
OPERATION_COST = Decimal("10")
STORED_COST = Decimal("10.00")  # as app_operations.cost (numeric(14,2)) holds it, which the API sends
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
ALONE_SQL, ALONE_ARGS = to_dollar_params(CONSUME_ALONE.text)


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


async def bare_transaction(conn: asyncpg.Connection, target: Target, app_id: uuid.UUID, cost: Decimal) -> None:
    """One consume, as the API does it: the app, its grant and its price come from the server's
    per-process caches (``credits/apps.py``; read once here), and the charge is a transaction of
    its own: ``CONSUME_ALONE`` (``credits/ledger.consume_alone``: no BEGIN, no COMMIT; it reports a
    missing team itself)."""
    row = await conn.fetchrow(ALONE_SQL, *positional(ALONE_ARGS, {
        "team_id": target.team_id, "amount": cost, "reserved_delta": 0, "type": "consume",
        "operation": OPERATION, "job_id": None, "reservation_id": None, "app_id": app_id,
        "user_id": None, "description": None, "metadata": "{}",
    }))
    if row is None or row["transaction_id"] is None:
        raise LoadError(f"consume refused: {dict(row) if row else None}")


async def naive_transaction(conn: asyncpg.Connection, target: Target) -> None:
    """The naive per-request transaction (what the API sent before its caches): ``BEGIN``;
    authenticate the app; the team's grant; its price for the operation; ``CONSUME``; ``COMMIT``."""
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


# Only CONSUME (and CONSUME_ALONE) lock the balance row: the session that ran it holds the lock until
# its COMMIT ends (CONSUME_ALONE: until the statement's own commit ends).
LOCK = HotLock("CONSUME", starts=("WITH bal AS",), contains=("INSERT INTO credit_transactions",))


async def create_target(url: str) -> Target:
    async with session(url) as s:
        team = await create_team(s, name="bench-consume", plan_code="enterprise", credits_amount=TEAM_CREDITS,
                                 free_generations=0)
        app = await register_app(s, name="bench-consume-app", operations={OPERATION: OPERATION_COST})
        await authorize_app(s, team_id=team.team_id, app_id=app.app_id, granted_by="admin")
        return Target(team.team_id, app.app_id, app.service_key)


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
    return await fetch_row(url, LEDGER_SQL, target.team_id, target.app_id)


async def last_ledger_id(url: str, target: Target) -> int:
    return int((await fetch_row(url, "SELECT COALESCE(max(id), 0) AS id FROM credit_transactions WHERE team_id = $1",
                                target.team_id))["id"])


async def print_transactions(url: str, target: Target, after_id: int) -> None:
    """The transactions that wrote the consume rows of the API run (warm-up and drain included):
    rows written by one transaction share its ``xmin``. Fewer transactions than rows when charges
    were batched (credits/coalesce.py: one statement, one commit, one WAL flush per batch)."""
    row = await fetch_row(url, """SELECT count(*) AS rows, count(DISTINCT CAST(xmin AS text)) AS transactions
                                    FROM credit_transactions WHERE team_id = $1 AND type = 'consume' AND id > $2""",
                          target.team_id, after_id)
    rows, transactions = int(row["rows"]), int(row["transactions"])
    print(f"  commits per charge: {transactions / rows if rows else float('nan'):.3f} ({rows} consume "
          f"rows written by {transactions} transactions; mean batch "
          f"{rows / transactions if transactions else float('nan'):.1f})")


async def check_books(url: str, target: Target, before: asyncpg.Record, api: Result, bare: Result,
                      naive: Result | None) -> bool:
    """The team's balance equals its ledger, check_ledger is happy, and the consume rows written
    during the runs are the successes counted by the clients."""
    after = await ledger_state(url, target)
    balance = (after["allocation_credits"], after["bonus_credits"], after["reserved_credits"])
    sums = (after["allocation"], after["bonus"], after["reserved"])
    rows = after["consumes"] - before["consumes"]
    spent = ((before["allocation_credits"] + before["bonus_credits"])
             - (after["allocation_credits"] + after["bonus_credits"]))
    consumed = after["consumed"] - before["consumed"]
    naive_ok = naive.total_ok if naive else 0
    async with session(url) as s:
        problems = await check_ledger(s)
    good = print_checks([
        (balance == sums, f"balance = sum of ledger deltas: allocation/bonus/reserved {'/'.join(map(str, balance))} vs "
                          f"{'/'.join(map(str, sums))} over {after['rows']} ledger rows"),
        (rows == api.total_ok + bare.total_ok + naive_ok,
         f"consume rows written: {rows} = {api.total_ok} API 200s (warm-up and drain included) + {bare.total_ok} "
         f"bare commits{f' + {naive_ok} naive commits' if naive else ''} = {api.total_ok + bare.total_ok + naive_ok}"),
        (spent == consumed == rows * OPERATION_COST,
         f"credits spent: {spent} = {rows} x {OPERATION_COST} (ledger amounts {consumed})"),
    ])
    print(f"  check_ledger: {'no problems' if not problems else f'{len(problems)} problems'}")
    for problem in problems[:10]:
        print(f"    {problem}")
    return good and not problems


async def main(args: argparse.Namespace) -> int:
    check_rendering((CONSUME, CONSUME_SQL, CONSUME_ARGS), (CONSUME_ALONE, ALONE_SQL, ALONE_ARGS))
    wrk = use_wrk(args.loadgen, args.py_spy)
    async with ApiBench("/tmp/pmc") as bench:
        target = await create_target(bench.url)
        rate_limits = {} if args.rate_limit == "keep" else {
            "PIXELMINT_RATE_LIMIT_CONSUME": args.rate_limit, "PIXELMINT_RATE_LIMIT_CONSUME_TEAM": args.rate_limit}
        await bench.serve(args.processes, rate_limits)
        max_connections = int((await bench.pg.describe("max_connections"))["max_connections"])
        print(f"server: pixelmint serve --no-worker on {bench.base_url} (pid {bench.proc.pid}, {args.processes} "
              f"process(es)); load generator: {'wrk' if wrk else 'httpx'}; {args.concurrency} clients on one team; "
              f"{args.seconds} s measured after {args.warmup} s warm-up; {os.cpu_count()} CPUs; consume rate "
              f"limit per key and per team: {args.rate_limit or 'none'}")
        await statement_check(bench, "/api/v1/credits/consume", target.body, target.service_key,
                              lambda conn: bare_transaction(conn, target, target.app_id, STORED_COST),
                              BARE_APP_NAME, LOCK.statement_name)
        print(f"setup took {time.monotonic() - bench.t0:.1f} s")
        if args.concurrency + 5 > max_connections:
            print(f"WARNING: {args.concurrency} connections + a few more may exceed max_connections")
        await warn_if_machine_busy()
        before = await ledger_state(bench.url, target)
        load = {"clients": args.concurrency, "seconds": args.seconds, "warmup": args.warmup}
        print(f"\nhot: {args.concurrency} clients consume '{OPERATION}' ({OPERATION_COST} credits) from one team")
        # bare first: its connections are closed before the server's pool grows to the API's
        # concurrency (both at once could pass max_connections).
        await checkpoint(bench.url)
        async with connections(bench.url, args.concurrency, BARE_APP_NAME) as conns:
            bare = await load_loop(lambda i: bare_transaction(conns[i], target, target.app_id, STORED_COST),
                                   meter=CpuMeter(None, bench.postmaster),
                                   sampler=LOCK.sampler(bench.url, BARE_APP_NAME, args.sample_interval),
                                   errors=(LoadError, asyncpg.PostgresError), **load)
        print_bare(bare, ("postgres", "bench"), rest=True)
        naive = None
        if args.naive:
            await checkpoint(bench.url)
            async with connections(bench.url, args.concurrency, BARE_APP_NAME) as conns:
                naive = await load_loop(lambda i: naive_transaction(conns[i], target),
                                        meter=CpuMeter(None, bench.postmaster),
                                        errors=(LoadError, asyncpg.PostgresError), **load)
            print("  naive (BEGIN; SELECT apps; SELECT app_grants; SELECT app_operations; CONSUME; COMMIT):")
            print_bare(naive, ("postgres", "bench"), rest=True)

        await checkpoint(bench.url)
        api_from = await last_ledger_id(bench.url, target)
        api = await bench.api_run(
            wrk, "/api/v1/credits/consume", 200, target.body, [target.service_key],
            cpu_keys=("server", "postgres", "bench"), rest=True,
            sampler=LOCK.sampler(bench.url, "pixelmint", args.sample_interval),
            profile=Path(args.py_spy) / "api-consume.txt" if args.py_spy else None, **load)
        await print_transactions(bench.url, target, api_from)
        ratio = api_bare_ratio(api, bare, AIM)
        if naive is not None:
            print(f"  API/naive throughput: {api.rate / naive.rate if naive.rate else float('nan'):.2f}")

        print("\nbooks")
        books_ok = await check_books(bench.url, target, before, api, bare, naive)

    print("\nsummary")
    print_summary_header()
    print(summary_row("hot", api, bare, ratio, "ok" if ratio >= AIM else f"below {AIM}"))
    print(f"books: {'ok' if books_ok else 'MISMATCH'}")
    return 1 if api.errors or bare.errors or (naive and naive.errors) or not api.count or not bare.count or not books_ok else 0


def parse_args() -> argparse.Namespace:
    parser = api_bench_parser(__doc__, seconds=20, warmup=3, concurrency=64)
    parser.add_argument("--rate-limit", default="1000000/second",
                        help="the server's consume rate limit, per key and per team ('limits' syntax; '' = none; "
                        "'keep' = the server's settings; default 1000000/second: counted, never reached)")
    parser.add_argument("--sample-interval", type=float, default=0.2,
                        help="seconds between pg_stat_activity samples during the runs (0: off; default 0.2)")
    parser.add_argument("--naive", action="store_true",
                        help="also run the naive per-request transaction (the app, grant and price read in it)")
    add_py_spy_option(parser, "run")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main, parse_args())
