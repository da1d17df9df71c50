#!/usr/bin/env python
"""Throughput of ``POST /api/v1/generate`` against the bare SQL transaction it stands on.

Run (about a minute with the defaults; wants ``wrk`` — ``apt-get install -y wrk`` — else it falls
back to a much costlier httpx load generator)::

    cd /work/main && .venv/bin/python benchmarks/bench_generate.py              # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_generate.py
    .venv/bin/python benchmarks/bench_generate.py --seconds 20 --py-spy /tmp/prof  # + server profile

What it does: gets a PostgreSQL (a fresh ``pixelmint_bench_<random>`` database on ``DATABASE_URL``,
else a throw-away embedded server), migrates it, creates 33 enterprise teams with plenty of credits
and no free generations, starts ``pixelmint serve --no-worker`` as a subprocess, then for two
scenarios — *hot* (every client charges the same team: one contended ``credit_balances`` row) and
*spread* (client i charges team i % 32) — measures, for ``--seconds`` after a ``--warmup``, with
``--concurrency`` (32) clients:

- API: ``POST /api/v1/generate`` (202, a queued job) through HTTP, load from ``wrk`` (one
  connection per wrk thread, so client i keeps its team) or, without wrk, an httpx generator;
- bare: the same database work with asyncpg on 32 connections, no HTTP, no SQLAlchemy:
  ``BEGIN; _AUTHENTICATE; _TAKE_FREE_GENERATION; RESERVE; _ENQUEUE; COMMIT`` (the reference model comes
  from a per-process cache in both)
  with the service's own SQL texts (``:name`` binds rewritten to ``$n`` exactly as SQLAlchemy's
  asyncpg dialect does; checked at start-up). These are the round trips one paid request
  makes (``get_principal`` + ``submit_generation`` as of this writing: keep ``bare_run`` in step
  when they change); the API also sends a coalesced ``NOTIFY`` after the commit, which the bare
  run leaves out.

and prints req/s, p50 and p99 latency of each, the ratio API/bare throughput (project aim: >= 0.6)
and where the CPU went (server process, PostgreSQL backends, load generator) on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from pixelmint.accounts.service import _AUTHENTICATE, create_team
from pixelmint.bootstrap import prepare_database
from pixelmint.credits.pricing import DEFAULT_PRICING
from pixelmint.credits.ledger import RESERVE
from pixelmint.jobs.queue import _ENQUEUE
from pixelmint.jobs.service import _TAKE_FREE_GENERATION
from pixelmint.kit.db import Database, asyncpg_connect_kwargs
from pixelmint.settings import Settings

from harness import (
    BenchPostgres,
    CpuMeter,
    checkpoint,
    cpu_text,
    find_postmaster,
    fmt_result,
    free_port,
    percentile,
    pg_settings,
    positional,
    print_summary_header,
    run_main,
    start_profile,
    start_server,
    stop_server,
    summarize_profile,
    summary_row,
    to_dollar_params,
    use_wrk,
    warn_if_machine_busy,
)

MODEL_ID = "business-headshot"
BODY = {"referenceModelId": MODEL_ID, "prompt": "bench", "resolution": "512x512"}
SPREAD_TEAMS = 32


# ------------------------------------------------------------------------------------------------
# SQL: the service's statements, with ``:name`` binds as asyncpg ``$n`` positional parameters


AUTH_SQL, AUTH_ARGS = to_dollar_params(_AUTHENTICATE.text)
FREE_SQL, FREE_ARGS = to_dollar_params(_TAKE_FREE_GENERATION.text)
RESERVE_SQL, RESERVE_ARGS = to_dollar_params(RESERVE.text)
ENQUEUE_SQL, ENQUEUE_ARGS = to_dollar_params(_ENQUEUE.text)
MODEL_SQL = "SELECT * FROM reference_models WHERE id = $1"  # catalog.get_pricing_info (cached 5 s)


def check_sql_matches_sqlalchemy() -> None:
    """The rewritten SQL must be what the service sends through SQLAlchemy's asyncpg dialect."""
    from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

    dialect = pg_asyncpg.dialect()
    for clause, (sql, names) in (
        (_AUTHENTICATE, (AUTH_SQL, AUTH_ARGS)),
        (_TAKE_FREE_GENERATION, (FREE_SQL, FREE_ARGS)),
        (RESERVE, (RESERVE_SQL, RESERVE_ARGS)),
        (_ENQUEUE, (ENQUEUE_SQL, ENQUEUE_ARGS)),
    ):
        compiled = clause.compile(dialect=dialect)
        if compiled.string != sql or list(compiled.positiontup or []) != names:
            raise SystemExit(f"bare SQL differs from SQLAlchemy's rendering:\n{compiled.string}\nvs\n{sql}")


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, per consumer
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------------------------
# Load generators for the API


WRK_SCRIPT = r"""
local keys = {%(keys)s}
local body = '%(body)s'
local threads = {}
local counter = 0

function setup(thread)
  thread:set("key", keys[(counter %% #keys) + 1])
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  req = wrk.format("POST", "/api/v1/generate",
                   {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
  ok = 0
  bad = 0
  first_bad = ""
end

function request()
  return req
end

function response(status, headers, resp_body)
  if status == 202 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(resp_body, 1, 300) end
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, first = 0, 0, ""
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
    local f = t:get("first_bad")
    if first == "" and f ~= nil then first = f end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "ok": %%d, "bad": %%d, '
    .. '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), ok_total, bad_total,
    e.connect, e.read, e.write, e.status, e.timeout))
  if first ~= "" then io.write("WRK_FIRST_BAD " .. first .. "\n") end
end
"""


def write_wrk_script(path: Path, keys: list[str]) -> None:
    path.write_text(
        WRK_SCRIPT % {"keys": ", ".join(f'"{k}"' for k in keys), "body": json.dumps(BODY, separators=(",", ":"))}
    )


def run_wrk(base_url: str, script: Path, *, concurrency: int, seconds: int) -> dict[str, object]:
    # One connection per wrk thread: thread i always sends key i % len(keys).
    cmd = [
        "wrk", f"-t{concurrency}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
        "-s", str(script), base_url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    result: dict[str, object] = {}
    for line in out.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            result = json.loads(line[len("WRK_RESULT "):])
        elif line.startswith("WRK_FIRST_BAD "):
            result["first_bad"] = line[len("WRK_FIRST_BAD "):]
    if not result:
        raise RuntimeError(f"wrk failed (rc {out.returncode}):\n{out.stdout}\n{out.stderr}")
    return result


def api_wrk(base_url: str, keys: list[str], *, concurrency: int, seconds: int, warmup: int, workdir: Path,
            meter: CpuMeter, on_measure_start=None) -> Result:
    script = workdir / "generate.lua"
    write_wrk_script(script, keys)
    if warmup > 0:
        run_wrk(base_url, script, concurrency=concurrency, seconds=warmup)
    profiler = on_measure_start() if on_measure_start else None
    meter.start()
    r = run_wrk(base_url, script, concurrency=concurrency, seconds=seconds)
    cpu = meter.stop()
    if profiler is not None:
        profiler.wait()
    errors = int(r["bad"]) + sum(int(r[k]) for k in ("connect", "read", "write", "timeout"))
    return Result(
        count=int(r["ok"]),
        seconds=int(r["duration_us"]) / 1e6,
        p50_ms=int(r["p50_us"]) / 1000,
        p99_ms=int(r["p99_us"]) / 1000,
        errors=errors,
        cpu=cpu,
        note=str(r.get("first_bad", "")),
    )


async def api_httpx(base_url: str, keys: list[str], *, concurrency: int, seconds: float, warmup: float,
                    meter: CpuMeter, on_measure_start=None) -> Result:
    """Fallback generator: ``concurrency`` tasks on one httpx client (much costlier than wrk)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    first_bad = ""
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        record_from = time.perf_counter() + warmup
        stop_at = record_from + seconds

        async def one_client(i: int) -> None:
            nonlocal errors, first_bad
            headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    resp = await client.post("/api/v1/generate", json=BODY, headers=headers)
                    good = resp.status_code == 202
                    if not good and not first_bad:
                        first_bad = f"{resp.status_code} {resp.text[:300]}"
                except httpx.HTTPError as exc:
                    good = False
                    first_bad = first_bad or repr(exc)
                end = time.perf_counter()
                if record_from <= end <= stop_at:
                    if good:
                        latencies.append(end - start)
                    else:
                        errors += 1

        async def measure() -> dict[str, float]:
            await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
            profiler = on_measure_start() if on_measure_start else None
            meter.start()
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            cpu = meter.stop()
            if profiler is not None:
                await asyncio.to_thread(profiler.wait)
            return cpu

        measuring = asyncio.create_task(measure())
        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
        cpu = await measuring
    latencies.sort()
    return Result(len(latencies), seconds, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
                  errors, {**cpu, "load generator (in bench)": cpu.pop("bench")}, first_bad)


# ------------------------------------------------------------------------------------------------
# The bare transaction


@dataclass(frozen=True)
class Caller:
    team_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str

    @property
    def key_hash(self) -> str:
        return hashlib.sha256(self.api_key.encode()).hexdigest()


async def bare_run(url: str, callers: list[Caller], *, concurrency: int, seconds: float, warmup: float,
                   meter: CpuMeter) -> Result:
    """``concurrency`` asyncpg connections, each running the endpoint's transaction in a loop."""
    kwargs = asyncpg_connect_kwargs(url)
    conns = await asyncio.gather(*(asyncpg.connect(**kwargs) for _ in range(concurrency)))
    max_attempts = Settings.model_fields["max_attempts"].default
    latencies: list[float] = []
    errors = 0
    first_error = ""
    # The API keeps active reference models in a 5-second per-process cache
    # (catalog.get_pricing_info): read once, as the API does in steady state.
    model = await conns[0].fetchrow(MODEL_SQL, MODEL_ID)
    try:
        record_from = time.perf_counter() + warmup
        stop_at = record_from + seconds

        async def one_client(i: int) -> None:
            nonlocal errors, first_error
            conn = conns[i]
            key_hash = callers[i % len(callers)].key_hash
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    async with conn.transaction():
                        auth = await conn.fetchrow(AUTH_SQL, key_hash)
                        free_left = await conn.fetchval(FREE_SQL, auth["user_id"])
                        if free_left is not None:
                            raise RuntimeError("the bench teams should have no free generations")
                        cost = DEFAULT_PRICING.image_generation(
                            width=512, height=512, quality="standard", complexity=model["complexity_factor"],
                            num_images=1,
                        )
                        job_id, reservation_id = uuid.uuid4(), uuid.uuid4()
                        reserved = await conn.fetchrow(RESERVE_SQL, *positional(RESERVE_ARGS, {
                            "team_id": auth["team_id"], "amount": cost, "reserved_delta": cost, "type": "reserve",
                            "operation": "image_generation", "job_id": job_id, "reservation_id": reservation_id,
                            "user_id": auth["user_id"], "description": None, "app_id": None, "expires_at": None,
                            "metadata": "{}",
                        }))
                        if reserved is None or reserved["from_allocation"] is None:
                            raise RuntimeError(f"reserve failed: {reserved}")
                        params = json.dumps({
                            "prompt": BODY["prompt"], "negativePrompt": None, "width": 512, "height": 512,
                            "quality": "standard", "numImages": 1, "seed": secrets.randbelow(2**32),
                            "modelKey": model["id"],
                        })
                        await conn.fetchrow(ENQUEUE_SQL, *positional(ENQUEUE_ARGS, {
                            "id": job_id, "team_id": auth["team_id"], "user_id": auth["user_id"],
                            "type": "image_generation", "priority": 0, "params": params,
                            "reference_model_id": model["id"], "custom_model_id": None, "custom_model_version": None,
                            "provider": model["provider"], "estimated_credits": cost,
                            "reservation_id": reservation_id, "is_free": False, "max_attempts": max_attempts,
                        }))
                    good = True
                except (asyncpg.PostgresError, RuntimeError) as exc:
                    good = False
                    first_error = first_error or repr(exc)
                end = time.perf_counter()
                if record_from <= end <= stop_at:
                    if good:
                        latencies.append(end - start)
                    else:
                        errors += 1

        async def measure() -> dict[str, float]:
            await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
            meter.start()
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            return meter.stop()

        measuring = asyncio.create_task(measure())
        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
        cpu = await measuring
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    latencies.sort()
    return Result(len(latencies), seconds, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
                  errors, cpu, first_error)


# ------------------------------------------------------------------------------------------------
# Database, teams and the server


async def create_callers(url: str, n: int) -> list[Caller]:
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as session:
            callers = []
            for i in range(n):
                created = await create_team(
                    session, name=f"bench-{i}", plan_code="enterprise", credits_amount=Decimal("100000000"),
                    free_generations=0,
                )
                callers.append(Caller(created.team_id, created.user_id, created.api_key))
            return callers
    finally:
        await db.dispose()


# ------------------------------------------------------------------------------------------------
# Main


async def main(args: argparse.Namespace) -> int:
    check_sql_matches_sqlalchemy()
    wrk = use_wrk(args.loadgen, args.py_spy)
    workdir = Path(tempfile.mkdtemp(prefix="/tmp/pmbw"))
    pg: BenchPostgres | None = None
    proc = None
    results: dict[str, tuple[Result, Result]] = {}
    try:
        t_setup = time.monotonic()
        pg = await BenchPostgres.open("/tmp/pmb")
        url = pg.url
        where = f"database {pg.bench_db} on DATABASE_URL" if pg.bench_db else f"embedded server {url}"
        await prepare_database(url)
        callers = await create_callers(url, SPREAD_TEAMS + 1)
        hot, spread = callers[:1], callers[1:]
        port = free_port()
        # The load is far above the default per-key rate limits and queues far more jobs than a
        # team may hold by default (no worker drains them): measure the endpoint, not 429s. With
        # no queue cap the service skips its backlog count, as the bare transaction does.
        proc = start_server(url, workdir, port, args.processes,
                            {"PIXELMINT_RATE_LIMIT_GENERATE": "", "PIXELMINT_RATE_LIMIT_GENERATE_TEAM": "",
                             "PIXELMINT_MAX_QUEUED_JOBS_PER_TEAM": "0"})
        base_url = f"http://127.0.0.1:{port}"
        settings = await pg_settings(url, "server_version", "synchronous_commit", "fsync")
        postmaster = await find_postmaster(url)
        print(f"PostgreSQL {settings['server_version']} ({where}; fsync={settings['fsync']}, "
              f"synchronous_commit={settings['synchronous_commit']})")
        print(f"server: pixelmint serve --no-worker on {base_url} (pid {proc.pid}); "
              f"load generator: {'wrk' if wrk else 'httpx'}; {args.concurrency} clients; "
              f"{args.seconds} s measured after {args.warmup} s warm-up; {os.cpu_count()} CPUs; "
              f"setup took {time.monotonic() - t_setup:.1f} s")
        await warn_if_machine_busy()

        scenarios = [
            ("hot", "hot: 1 team (one balance row)", hot),
            ("spread", "spread: 32 teams (client i -> team i % 32)", spread),
        ]
        for name, title, team_callers in scenarios:
            if args.only and name != args.only:
                continue
            print(f"\n{title}")
            keys = [c.api_key for c in team_callers]
            meter = CpuMeter(proc.pid, postmaster)
            profile_path = Path(args.py_spy) / f"api-{name}.txt" if args.py_spy else None
            on_measure = (lambda p=profile_path: start_profile(proc.pid, p, args.seconds)) if profile_path else None
            if profile_path:
                profile_path.parent.mkdir(parents=True, exist_ok=True)
            await checkpoint(url)
            if wrk:
                api = await asyncio.to_thread(
                    api_wrk, base_url, keys, concurrency=args.concurrency, seconds=args.seconds,
                    warmup=args.warmup, workdir=workdir, meter=meter, on_measure_start=on_measure,
                )
                print(fmt_result("API", api))
                print("       " + cpu_text(api.cpu, ("server", "postgres", "wrk")))
            else:
                api = await api_httpx(
                    base_url, keys, concurrency=args.concurrency, seconds=args.seconds, warmup=args.warmup,
                    meter=meter, on_measure_start=on_measure,
                )
                print(fmt_result("API", api))
                print("       " + cpu_text(api.cpu, ("server", "postgres", "load generator (in bench)")))
            if profile_path:
                print(f"  server profile ({profile_path}):")
                print(summarize_profile(profile_path))
            await checkpoint(url)
            bare = await bare_run(url, team_callers, concurrency=args.concurrency, seconds=args.seconds,
                                  warmup=args.warmup, meter=CpuMeter(None, postmaster))
            print(fmt_result("bare", bare))
            print("       " + cpu_text(bare.cpu, ("postgres", "bench")))
            ratio = api.rate / bare.rate if bare.rate else float("nan")
            print(f"  API/bare throughput: {ratio:.2f}  (aim >= 0.60)")
            results[title.split(":")[0]] = (api, bare)

        print("\nsummary")
        print_summary_header()
        for name, (api, bare) in results.items():
            ratio = api.rate / bare.rate if bare.rate else float("nan")
            flag = "ok" if ratio >= 0.6 else "below 0.6"
            print(summary_row(name, api, bare, ratio, flag))
        failed = any(api.errors or bare.errors or not api.count or not bare.count for api, bare in results.values())
        return 1 if failed else 0
    finally:
        if proc is not None:
            stop_server(proc)
        if pg is not None:
            await pg.close()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each run (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto",
                        help="API load generator (auto: wrk if installed, else httpx)")
    parser.add_argument("--processes", type=int, default=1, help="API server processes (default 1)")
    parser.add_argument("--only", choices=("hot", "spread"), help="run one scenario")
    parser.add_argument("--py-spy", metavar="DIR", help="profile the server with py-spy during the measured API "
                        "runs (collapsed stacks into DIR; slows the server, so the numbers are not comparable)")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main, parse_args())
