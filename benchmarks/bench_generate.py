#!/usr/bin/env python
"""Throughput of ``POST /api/v1/generate`` against the bare SQL transaction it stands on.

Run (about a minute with the defaults; wants ``wrk`` — ``apt-get install -y wrk`` — else it falls
back to a much costlier httpx load generator)::

    cd /work/main && .venv/bin/python benchmarks/bench_generate.py              # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_generate.py
    .venv/bin/python benchmarks/bench_generate.py --seconds 20 --py-spy /tmp/prof  # + server profile

Scenarios: *hot* (``--concurrency`` clients charge one team: one contended balance row) and
*spread* (client i charges team i % 32), each through the API and through the bare transaction
(``bare_transaction``: the statements one paid request sends, with the service's own SQL texts).
What is measured and how to read the output: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

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
    print_summary_header,
    run_main,
    session,
    statement_check,
    summary_row,
    to_dollar_params,
    use_wrk,
    warn_if_machine_busy,
)
from pixelmint.accounts.service import _AUTHENTICATE, _TAKE_FREE_GENERATION
from pixelmint.credits.ledger import RESERVE
from pixelmint.credits.pricing import DEFAULT_PRICING
from pixelmint.flows.generation import SUBMIT_ALONE
from pixelmint.flows.teams import create_team
from pixelmint.jobs.queue import _ENQUEUE
from pixelmint.settings import Settings

MODEL_ID = "business-headshot"
BODY = {"referenceModelId": MODEL_ID, "prompt": "bench", "resolution": "512x512"}
SPREAD_TEAMS = 32
AIM = 0.6

# The service's statements, with ``:name`` binds as asyncpg ``$n`` positional parameters.
AUTH_SQL, AUTH_ARGS = to_dollar_params(_AUTHENTICATE.text)
FREE_SQL, FREE_ARGS = to_dollar_params(_TAKE_FREE_GENERATION.text)
RESERVE_SQL, RESERVE_ARGS = to_dollar_params(RESERVE.text)
ENQUEUE_SQL, ENQUEUE_ARGS = to_dollar_params(_ENQUEUE.text)
SUBMIT_SQL, SUBMIT_ARGS = to_dollar_params(SUBMIT_ALONE.text)
MODEL_SQL = "SELECT * FROM reference_models WHERE id = $1"  # catalog.get_pricing_info (cached 5 s)
RENDERED = ((_AUTHENTICATE, AUTH_SQL, AUTH_ARGS), (_TAKE_FREE_GENERATION, FREE_SQL, FREE_ARGS),
            (RESERVE, RESERVE_SQL, RESERVE_ARGS), (_ENQUEUE, ENQUEUE_SQL, ENQUEUE_ARGS),
            (SUBMIT_ALONE, SUBMIT_SQL, SUBMIT_ARGS))


BARE_APP_NAME = "pixelmint-bench"  # application_name of the statement check's bare connection
# Only SUBMIT (flows/generation.py) locks the balance row.
LOCK = HotLock("SUBMIT", starts=("WITH cap AS",))


def key_hash(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def bare_transaction(conn: asyncpg.Connection, auth: asyncpg.Record, model: asyncpg.Record,
                           max_attempts: int) -> None:
    """One paid generate, as the API does it: the caller's principal comes from the server's
    per-process cache (``accounts.service.authenticate``; read once here), so ONE statement that is
    its own transaction (no BEGIN, no COMMIT): ``SUBMIT_ALONE`` (``flows/generation.py``: queue
    capacity, no free generation left, reserve, enqueue)."""
    cost = DEFAULT_PRICING.image_generation(width=512, height=512, quality="standard",
                                            complexity=model["complexity_factor"], num_images=1)
    row = await conn.fetchrow(SUBMIT_SQL, *positional(SUBMIT_ARGS, {
        "queue_limit": 0, "team_id": auth["team_id"], "user_id": auth["user_id"], "paid": True,
        "amount": cost, "reserved_delta": cost, "type": "reserve", "expires_at": None,
        "operation": "image_generation", "job_id": uuid.uuid4(), "reservation_id": uuid.uuid4(), "app_id": None,
        "description": None, "metadata": "{}", "job_type": "image_generation", "priority": 0,
        "params": _params(model), "reference_model_id": model["id"], "custom_model_id": None,
        "custom_model_version": None, "provider": model["provider"], "max_attempts": max_attempts,
    }))
    if row["id"] is None or row["is_free"]:
        raise LoadError(f"submit refused or free: {dict(row)}")


def _params(model: asyncpg.Record) -> str:
    return json.dumps({
        "prompt": BODY["prompt"], "negativePrompt": None, "width": 512, "height": 512, "quality": "standard",
        "numImages": 1, "seed": secrets.randbelow(2**32), "modelKey": model["id"],
    })


async def naive_transaction(conn: asyncpg.Connection, key_digest: str, model: asyncpg.Record, max_attempts: int) -> None:
    """The naive per-request transaction (what the API sent before its caches): ``BEGIN``;
    authenticate; no free generation left; reserve; enqueue; ``COMMIT``."""
    async with conn.transaction():
        await _spend_and_enqueue(conn, await conn.fetchrow(AUTH_SQL, key_digest), model, max_attempts)


async def _spend_and_enqueue(conn: asyncpg.Connection, auth: asyncpg.Record, model: asyncpg.Record,
                             max_attempts: int) -> None:
    if await conn.fetchval(FREE_SQL, auth["user_id"]) is not None:
        raise LoadError("the bench teams should have no free generations")
    cost = DEFAULT_PRICING.image_generation(width=512, height=512, quality="standard",
                                            complexity=model["complexity_factor"], num_images=1)
    job_id, reservation_id = uuid.uuid4(), uuid.uuid4()
    reserved = await conn.fetchrow(RESERVE_SQL, *positional(RESERVE_ARGS, {
        "team_id": auth["team_id"], "amount": cost, "reserved_delta": cost, "type": "reserve",
        "operation": "image_generation", "job_id": job_id, "reservation_id": reservation_id,
        "user_id": auth["user_id"], "description": None, "app_id": None, "metadata": "{}", "expires_at": None,
    }))
    if reserved is None or reserved["from_allocation"] is None:
        raise LoadError(f"reserve failed: {reserved}")
    params = _params(model)
    await conn.fetchrow(ENQUEUE_SQL, *positional(ENQUEUE_ARGS, {
        "id": job_id, "team_id": auth["team_id"], "user_id": auth["user_id"], "type": "image_generation",
        "priority": 0, "params": params, "reference_model_id": model["id"], "custom_model_id": None,
        "custom_model_version": None, "provider": model["provider"], "estimated_credits": cost,
        "reservation_id": reservation_id, "is_free": False, "max_attempts": max_attempts,
    }))


async def bare_run(url: str, keys: list[str], *, clients: int, naive: bool = False, **load: Any) -> Result:
    """The endpoint's transaction (or, with ``naive``, the naive one) in a loop on ``clients``
    asyncpg connections (client i: key i % len)."""
    max_attempts = Settings.model_fields["max_attempts"].default
    async with connections(url, clients) as conns:
        # The API keeps active reference models and principals in per-process caches
        # (catalog.get_pricing_info, accounts.service.authenticate): read once, as the API does in
        # steady state.
        model = await conns[0].fetchrow(MODEL_SQL, MODEL_ID)
        digests = [key_hash(k) for k in keys]
        if naive:
            return await load_loop(
                lambda i: naive_transaction(conns[i], digests[i % len(digests)], model, max_attempts),
                clients=clients, errors=(LoadError, asyncpg.PostgresError), **load)
        auths = [await conns[0].fetchrow(AUTH_SQL, digest) for digest in digests]
        return await load_loop(
            lambda i: bare_transaction(conns[i], auths[i % len(auths)], model, max_attempts),
            clients=clients, errors=(LoadError, asyncpg.PostgresError), **load)


async def create_keys(url: str, n: int) -> list[str]:
    async with session(url) as s:
        return [(await create_team(s, name=f"bench-{i}", plan_code="enterprise",
                                   credits_amount=Decimal("100000000"), free_generations=0)).api_key
                for i in range(n)]


async def print_transactions(url: str, since: object) -> None:
    """The transactions that wrote the jobs of the API run (warm-up and drain included): jobs
    written by one transaction share its ``xmin``. Fewer transactions than jobs when submissions
    were batched (flows/generation._SUBMIT_BATCH: one statement, one commit per batch)."""
    row = await fetch_row(url, """SELECT count(*) AS jobs, count(DISTINCT CAST(xmin AS text)) AS transactions
                                    FROM jobs WHERE created_at >= $1""", since)
    jobs, transactions = int(row["jobs"]), int(row["transactions"])
    print(f"  commits per job: {transactions / jobs if jobs else float('nan'):.3f} ({jobs} jobs written by "
          f"{transactions} transactions; mean batch {jobs / transactions if transactions else float('nan'):.1f})")


async def framework_floor(bench: ApiBench, wrk: bool, load: dict[str, Any]) -> Result:
    """The server's ceiling on this machine: the same ``POST /api/v1/generate`` under the same load
    with an empty key, so that every middleware, the routing and the error rendering run and the
    request is refused (401 ``missing_api_key``) before its first statement. No API/bare ratio can
    exceed floor/bare: the bare loop spends nothing outside PostgreSQL."""
    print("\nfloor: the same route with an empty key (401 before any database work)")
    return await bench.api_run(wrk, "/api/v1/generate", 401, BODY, [""], cpu_keys=("server", "postgres"), **load)


async def main(args: argparse.Namespace) -> int:
    check_rendering(*RENDERED)
    wrk = use_wrk(args.loadgen, args.py_spy)
    results: dict[str, tuple[Result, Result]] = {}
    async with ApiBench("/tmp/pmb") as bench:
        keys = await create_keys(bench.url, SPREAD_TEAMS + 1)
        # The load is far above the default per-key rate limits and queues far more jobs than a
        # team may hold by default (no worker drains them): measure the endpoint, not 429s. With
        # no queue cap the service skips its backlog count, as the bare transaction does.
        await bench.serve(args.processes, {"PIXELMINT_RATE_LIMIT_GENERATE": "",
                                           "PIXELMINT_RATE_LIMIT_GENERATE_TEAM": "",
                                           "PIXELMINT_MAX_QUEUED_JOBS_PER_TEAM": "0"})
        await bench.pg.describe()
        print(f"server: pixelmint serve --no-worker on {bench.base_url} (pid {bench.proc.pid}); "
              f"load generator: {'wrk' if wrk else 'httpx'}; {args.concurrency} clients; "
              f"{args.seconds} s measured after {args.warmup} s warm-up; {os.cpu_count()} CPUs; "
              f"setup took {time.monotonic() - bench.t0:.1f} s")
        max_attempts = Settings.model_fields["max_attempts"].default
        async with connections(bench.url, 1) as (conn,):
            model = await conn.fetchrow(MODEL_SQL, MODEL_ID)
            auth = await conn.fetchrow(AUTH_SQL, key_hash(keys[0]))
        await statement_check(bench, "/api/v1/generate", BODY, keys[0],
                              lambda conn: bare_transaction(conn, auth, model, max_attempts), BARE_APP_NAME,
                              LOCK.statement_name, params=False)
        await warn_if_machine_busy()
        load = {"clients": args.concurrency, "seconds": args.seconds, "warmup": args.warmup}
        scenarios = [("hot", "hot: 1 team (one balance row)", keys[:1]),
                     ("spread", "spread: 32 teams (client i -> team i % 32)", keys[1:])]
        for name, title, team_keys in scenarios:
            if args.only and name != args.only:
                continue
            print(f"\n{title}")
            await checkpoint(bench.url)
            api_from = (await fetch_row(bench.url, "SELECT now() AS t"))["t"]
            api = await bench.api_run(wrk, "/api/v1/generate", 202, BODY, team_keys, cpu_keys=("server", "postgres"),
                                      profile=Path(args.py_spy) / f"api-{name}.txt" if args.py_spy else None, **load)
            await print_transactions(bench.url, api_from)
            await checkpoint(bench.url)
            bare = await bare_run(bench.url, team_keys, meter=CpuMeter(None, bench.postmaster), **load)
            print_bare(bare, ("postgres", "bench"))
            api_bare_ratio(api, bare, AIM)
            if args.naive:
                await checkpoint(bench.url)
                naive = await bare_run(bench.url, team_keys, naive=True, meter=CpuMeter(None, bench.postmaster), **load)
                print("  naive (BEGIN; authenticate; free generation; RESERVE; ENQUEUE; COMMIT: before the caches "
                      "and the one-statement submit):")
                print_bare(naive, ("postgres", "bench"))
                print(f"  API/naive throughput: {api.rate / naive.rate if naive.rate else float('nan'):.2f}")
            results[name] = (api, bare)
        if not args.only:
            floor = await framework_floor(bench, wrk, load)

    print("\nsummary")
    print_summary_header()
    for name, (api, bare) in results.items():
        ratio = api_bare_ratio(api, bare, AIM, show=False)
        print(summary_row(name, api, bare, ratio, "ok" if ratio >= AIM else f"below {AIM}"))
    if not args.only:
        print(f"{'floor':<8} {floor.rate:>10.1f} {floor.p50_ms:>8.2f} {floor.p99_ms:>8.2f}   (401 before any statement; "
              + ", ".join(f"floor/bare {name} {floor.rate / bare.rate:.2f}" for name, (_api, bare) in results.items()
                          if bare.rate) + ": no API/bare ratio can pass these)")
    failed = any(api.errors or bare.errors or not api.count or not bare.count for api, bare in results.values())
    return 1 if failed else 0


def parse_args() -> argparse.Namespace:
    parser = api_bench_parser(__doc__, seconds=10, warmup=2, concurrency=32)
    parser.add_argument("--only", choices=("hot", "spread"), help="run one scenario")
    parser.add_argument("--naive", action="store_true",
                        help="also run the naive per-request transaction (the caller authenticated in it)")
    add_py_spy_option(parser, "runs")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main, parse_args())
