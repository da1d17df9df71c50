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
(10^8 consumes: it never runs out) and registers one app whose price list has ``deck`` = 10
credits (and grants it the team), starts ``pixelmint serve --no-worker`` as a subprocess, then measures, for ``--seconds``
after a ``--warmup``, with ``--concurrency`` (64) clients all charging that one team:

- bare (run first, so that its connections are gone before the server's pool grows): the database
  work of one request with asyncpg on 64 connections, no HTTP, no SQLAlchemy, each in a loop::

      BEGIN;
      SELECT apps.* FROM apps WHERE apps.key_hash = $1::VARCHAR AND apps.revoked_at IS NULL;
                                               -- apps.authenticate_app (the service key's digest)
      SELECT app_grants.app_id FROM app_grants
       WHERE app_grants.team_id = $1::UUID AND app_grants.app_id = $2::UUID;
                                               -- apps.require_grant (the team granted the app)
      SELECT app_operations.cost FROM app_operations
       WHERE app_operations.app_id = $1::UUID AND app_operations.operation = $2::VARCHAR;
                                               -- apps.price (no amount in the body)
      CONSUME;                                 -- credits.ledger.CONSUME: lock, update, ledger row
      COMMIT;

  These are exactly the statements one API request sends, read from PostgreSQL's statement log
  (``log_statement = all``) as of this writing: nothing else (no pre-ping, no SET, no NOTIFY; the
  rate limiter counts in memory and, without an ``Idempotency-Key``, idempotency sends nothing).
  The SELECTs are rendered from the same SQLAlchemy constructs as in ``credits/apps.py`` and
  ``CONSUME`` is the service's own text (``:name`` binds rewritten to ``$n`` exactly as
  SQLAlchemy's asyncpg dialect does). On the embedded server the benchmark checks this at start-up:
  it turns ``log_statement = all`` on for a moment, sends one API request and runs one bare
  transaction, and stops (exit 2) if the two sent different statements or parameters — keep
  ``bare_transaction`` in step when the endpoint changes. (With ``DATABASE_URL`` the check is
  skipped: it needs the server's log file.)
- API: ``POST /api/v1/credits/consume`` with ``Authorization: Bearer pms_…`` and body
  ``{"teamId": <team>, "operation": "deck"}`` (no ``amount``: the price comes from the app's
  price list; no ``Idempotency-Key``), 200 expected, load from ``wrk`` (one connection per wrk
  thread, warm-up and measurement in one wrk run; each thread stops after its first response past
  the measured window, so no request is left in flight and every charge the server made is
  counted) or, without wrk, an httpx generator.

The server's consume rate limits (``PIXELMINT_RATE_LIMIT_CONSUME`` and ``…_CONSUME_TEAM``, 600
and 1200 a minute by default) would turn nearly all of this load into 429s: the server gets
``--rate-limit`` (default ``1000000/second``) for both instead, so the limiter still counts every
request (in memory, a moving window holding about as many entries as the default's) but never
refuses one; ``--rate-limit ""`` turns it off, ``--rate-limit keep`` leaves the settings alone.

It prints req/s or tx/s, p50 and p99 latency of each, the ratio API/bare throughput (project aim:
>= 0.5), where the CPU went (server process, PostgreSQL backends, wrk, this process, the rest of
the machine) and, from ``pg_stat_activity`` samples, what the database sessions and the holder of
the hot row's lock were doing. Last, it checks the books: the team's balance equals the sum of its
ledger deltas (and ``credits.service.check_ledger`` finds nothing), the consume ledger rows
written equal the successful API requests (warm-up included) + the committed bare transactions,
and the credits spent equal those rows times the price.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

from pixelmint.accounts.service import create_team
from pixelmint.bootstrap import prepare_database
from pixelmint.credits.apps import authorize_app, register_app
from pixelmint.credits.ledger import CONSUME
from pixelmint.credits.service import check_ledger
from pixelmint.credits.tables import App, AppGrant, AppOperation
from pixelmint.kit.db import Database, asyncpg_connect_kwargs

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

OPERATION = "deck"
OPERATION_COST = Decimal("10")
TEAM_CREDITS = Decimal("1000000000")  # 10^8 consumes of 10 credits: never runs out
AIM = 0.5
BARE_APP_NAME = "pixelmint-bench"  # application_name of the bare connections (the server's is "pixelmint")
SAMPLER_APP_NAME = "pixelmint-bench-sampler"
DRAIN_TIMEOUT = 35.0  # seconds to wait, after the window, for the requests in flight (wrk --timeout 30s)


# ------------------------------------------------------------------------------------------------
# SQL: what one API request sends, with asyncpg ``$n`` positional parameters


def render(statement) -> str:  # type: ignore[no-untyped-def]
    """A SQLAlchemy construct as SQLAlchemy's asyncpg dialect sends it."""
    return statement.compile(dialect=pg_asyncpg.dialect()).string


# The same constructs as credits/apps.py (authenticate_app, require_grant, price);
# the values are placeholders, only the rendered text is used.
AUTH_SQL = render(select(App).where(App.key_hash == "", App.revoked_at.is_(None)))
GRANT_SQL = render(select(AppGrant.app_id).where(AppGrant.team_id == uuid.UUID(int=0),
                                                AppGrant.app_id == uuid.UUID(int=0)))
COST_SQL = render(select(AppOperation.cost).where(AppOperation.app_id == uuid.UUID(int=0),
                                                  AppOperation.operation == ""))
CONSUME_SQL, CONSUME_ARGS = to_dollar_params(CONSUME.text)


def check_sql_matches_sqlalchemy() -> None:
    """The rewritten ``CONSUME`` must be what the service sends through SQLAlchemy's asyncpg dialect."""
    compiled = CONSUME.compile(dialect=pg_asyncpg.dialect())
    if compiled.string != CONSUME_SQL or list(compiled.positiontup or []) != CONSUME_ARGS:
        raise SystemExit(f"bare SQL differs from SQLAlchemy's rendering:\n{compiled.string}\nvs\n{CONSUME_SQL}")


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
    price for the operation; ``CONSUME`` (which reports a missing team itself); ``COMMIT``. Raises
    on any surprise."""
    async with conn.transaction():
        app = await conn.fetchrow(AUTH_SQL, target.key_hash)
        if app is None:
            raise RuntimeError("service key not found")
        if await conn.fetchval(GRANT_SQL, target.team_id, app["id"]) is None:
            raise RuntimeError("the team has not granted the app")
        cost = await conn.fetchval(COST_SQL, app["id"], OPERATION)
        if cost is None:
            raise RuntimeError(f"the app has no price for {OPERATION!r}")
        row = await conn.fetchrow(CONSUME_SQL, *positional(CONSUME_ARGS, {
            "team_id": target.team_id, "amount": cost, "reserved_delta": 0, "type": "consume",
            "operation": OPERATION, "job_id": None, "reservation_id": None, "app_id": app["id"],
            "user_id": None, "description": None, "metadata": "{}",
        }))
        if row is None or row["transaction_id"] is None:
            raise RuntimeError(f"consume refused: {dict(row) if row else None}")


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    count: int  # successes completed inside the measured window
    seconds: float
    p50_ms: float
    p99_ms: float
    total_ok: int = 0  # successes over the whole run (warm-up and drain included): for the ledger check
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, per consumer
    waits: str = ""
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------------------------
# What the database sessions and the hot row's lock holder are doing (pg_stat_activity samples)


# pg_stat_activity only: pg_blocking_pids()/pg_locks take every lock-manager partition lock and
# would themselves slow the hot row down. The lock holder is recognised by its statement instead:
# only CONSUME locks the balance row, so it is held by the session that ran CONSUME and has not
# finished COMMIT.
SAMPLE_SQL = """
SELECT state, wait_event_type, wait_event, left(query, 120) AS query
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend' AND application_name = $1
"""


def statement_name(query: str) -> str:
    q = " ".join(query.split())
    if q.startswith("WITH bal AS"):
        return "CONSUME"
    if q.rstrip(";") in ("BEGIN", "COMMIT", "ROLLBACK"):
        return q.rstrip(";")
    match = re.match(r"SELECT (\w+)\.", q)
    return f"SELECT {match.group(1)}" if match else q[:20]


def session_kind(state: str | None, wait_type: str | None, wait_event: str | None, query: str) -> str:
    statement = statement_name(query)
    if state == "idle in transaction":
        return f"idle in tx after {statement} (waiting for the client)"
    if state == "idle":
        return "idle (between transactions)"
    if state != "active":
        return state or "?"
    if wait_type is None:
        return f"running {statement}"
    if wait_type == "Lock":
        return f"waiting for the row lock ({statement})"
    if wait_event and ("WAL" in wait_event.upper()):
        return f"WAL write/flush ({statement})"
    if wait_type == "LWLock" and wait_event == "LockManager":
        return f"waiting for a lock-manager partition ({statement})"
    return f"{wait_type}/{wait_event} ({statement})"


def holder_phase(kinds: list[str]) -> str:
    """What the session holding the balance row's lock is doing, in one sample."""
    for kind in kinds:
        if kind.startswith("idle in tx after CONSUME"):
            return "waiting for the client to send COMMIT"
    for kind in kinds:
        if kind.endswith("(COMMIT)") or kind == "running COMMIT":
            return "WAL flush (COMMIT)" if kind.startswith("WAL") else f"committing: {kind}"
    for kind in kinds:
        if kind == "running CONSUME":
            return "running CONSUME"
    return "none visible (lock changing hands)"


class WaitSampler:
    """Samples the sessions of one application (the server's pool or the bare connections) every
    ``interval`` seconds: how many are in each state, and what the holder of the hot balance row's
    lock is doing."""

    def __init__(self, url: str, application_name: str, interval: float) -> None:
        self.url = url
        self.application_name = application_name
        self.interval = interval
        self.kinds: collections.Counter[str] = collections.Counter()
        self.holder: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(self.url),
                                     server_settings={"application_name": SAMPLER_APP_NAME})
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(SAMPLE_SQL, self.application_name)
                kinds = [session_kind(r["state"], r["wait_event_type"], r["wait_event"], r["query"] or "")
                         for r in rows]
                self.samples += 1
                self.kinds.update(kinds)
                self.holder[holder_phase(kinds)] += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            await conn.close()

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> str:
        self._stop.set()
        if self._task is None:
            return ""
        await self._task
        if not self.samples:
            return ""
        n = self.samples
        sessions = ", ".join(f"{v / n:.1f} {k}" for k, v in self.kinds.most_common() if v / n >= 0.05)
        holder = ", ".join(f"{k} {v / n:.0%}" for k, v in self.holder.most_common())
        return (f"db sessions (mean of {n} samples): {sessions}\n"
                f"       row-lock holder: {holder}")


async def measure_window(t_from: float, t_until: float, meter: CpuMeter, sampler: WaitSampler,
                         on_measure_start=None) -> tuple[dict[str, float], str]:  # type: ignore[no-untyped-def]
    """CPU and session samples over [t_from, t_until) (``time.monotonic`` times)."""
    await asyncio.sleep(max(0.0, t_from - time.monotonic()))
    profiler = on_measure_start() if on_measure_start else None
    meter.start()
    sampler.start()
    await asyncio.sleep(max(0.0, t_until - time.monotonic()))
    cpu = meter.stop()
    waits = await sampler.stop()
    if profiler is not None:
        await asyncio.to_thread(profiler.wait)
    return cpu, waits


# ------------------------------------------------------------------------------------------------
# Load generators for the API


# One wrk run does warm-up, measurement and drain. Times are CLOCK_MONOTONIC (Python's
# time.monotonic). A thread stops itself (wrk.thread:stop()) after its first response past the
# window: with one connection per thread nothing is left in flight, so every charge the server
# made was answered and counted. Each thread then writes its counts and in-window latencies to
# <outdir>/thread-<id>; the Python side waits for all of them and ends wrk with SIGINT.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pmc_timespec;
int clock_gettime(int clk_id, pmc_timespec *tp);
]]
local ts = ffi.new("pmc_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local measure_from, measure_until = %(measure_from).6f, %(measure_until).6f
local outdir = "%(outdir)s"
local body = '%(body)s'
local auth = "Bearer %(key)s"
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  req = wrk.format("POST", "/api/v1/credits/consume",
                   {["Content-Type"] = "application/json", ["Authorization"] = auth}, body)
  warm, ok, tail, bad = 0, 0, 0, 0
  first_bad = ""
  lat = {}
  sent = 0
end

function request()
  sent = now()
  return req
end

function response(status, headers, resp_body)
  local t = now()
  if status == 200 then
    if t < measure_from then
      warm = warm + 1
    elseif t < measure_until then
      ok = ok + 1
      lat[ok] = t - sent
    else
      tail = tail + 1
    end
  else
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(resp_body or "", 1, 300) end
  end
  if t >= measure_until then
    local path = outdir .. "/thread-" .. id
    local f = io.open(path .. ".tmp", "w")
    f:write(string.format("%%d %%d %%d %%d\n", warm, ok, tail, bad))
    f:write((string.gsub(first_bad, "\n", " ")), "\n")
    for i = 1, #lat do f:write(string.format("%%.6f\n", lat[i])) end
    f:close()
    os.rename(path .. ".tmp", path)
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


async def api_wrk(base_url: str, target: Target, *, concurrency: int, seconds: float, warmup: float,
                  workdir: Path, meter: CpuMeter, sampler: WaitSampler, on_measure_start=None) -> Result:  # type: ignore[no-untyped-def]
    outdir = workdir / "wrk-out"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    t0 = time.monotonic() + 0.3  # wrk start-up
    measure_from = t0 + warmup
    measure_until = measure_from + seconds
    script = workdir / "consume.lua"
    script.write_text(WRK_SCRIPT % {
        "measure_from": measure_from, "measure_until": measure_until, "outdir": str(outdir),
        "body": json.dumps(target.body, separators=(",", ":")), "key": target.service_key,
    })
    # One connection per wrk thread (so a thread can stop with nothing in flight); -d is only a
    # backstop: the run ends when every thread has reported.
    hard_stop = int(warmup + seconds + DRAIN_TIMEOUT + 30)
    proc = subprocess.Popen(
        ["wrk", f"-t{concurrency}", f"-c{concurrency}", f"-d{hard_stop}s", "--timeout", "30s", "-s", str(script),
         base_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        meter.loadgen_pid = proc.pid
        cpu, waits = await measure_window(measure_from, measure_until, meter, sampler, on_measure_start)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (proc.poll() is None and time.monotonic() < deadline
               and sum(1 for p in outdir.glob("thread-*") if not p.name.endswith(".tmp")) < concurrency):
            await asyncio.sleep(0.05)
        drain = time.monotonic() - measure_until
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # wrk then joins its threads and runs done()
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary: dict[str, int] = {}
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            summary = json.loads(line[len("WRK_RESULT "):])
    if not summary:
        raise RuntimeError(f"wrk failed (rc {proc.returncode}):\n{out}\n{err}")
    warm = ok = tail = bad = 0
    first_bad = ""
    latencies: list[float] = []
    reports = sorted(p for p in outdir.glob("thread-*") if not p.name.endswith(".tmp"))
    for path in reports:
        lines = path.read_text().split("\n")
        w, o, t, b = (int(v) for v in lines[0].split())
        warm, ok, tail, bad = warm + w, ok + o, tail + t, bad + b
        first_bad = first_bad or lines[1].strip()
        latencies += [float(v) for v in lines[2:] if v]
    socket_errors = sum(int(summary[k]) for k in ("connect", "read", "write", "timeout"))
    note = first_bad
    if len(reports) < concurrency:
        note = (note + "; " if note else "") + (
            f"{concurrency - len(reports)} wrk threads did not finish within {DRAIN_TIMEOUT:.0f} s: "
            "their counts are missing")
    if socket_errors:
        note = (note + "; " if note else "") + f"wrk socket errors/timeouts: {socket_errors} (outcome unknown)"
    latencies.sort()
    return Result(
        count=ok, seconds=seconds, p50_ms=percentile(latencies, 50) * 1000, p99_ms=percentile(latencies, 99) * 1000,
        total_ok=warm + ok + tail, errors=bad + socket_errors + (concurrency - len(reports)), cpu=cpu,
        waits="\n       ".join(filter(None, [waits, f"drain after the window: {drain:.2f} s"])), note=note,
    )


async def api_httpx(base_url: str, target: Target, *, concurrency: int, seconds: float, warmup: float,
                    meter: CpuMeter, sampler: WaitSampler, on_measure_start=None) -> Result:  # type: ignore[no-untyped-def]
    """Fallback generator: ``concurrency`` tasks on one httpx client (much costlier than wrk).
    Every task finishes its request in flight, so every charge is counted."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {target.service_key}"}
    latencies: list[float] = []
    total_ok = errors = 0
    first_bad = ""
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        record_from = time.monotonic() + warmup
        stop_at = record_from + seconds

        async def one_client() -> None:
            nonlocal errors, first_bad, total_ok
            while time.monotonic() < stop_at:
                start = time.monotonic()
                try:
                    resp = await client.post("/api/v1/credits/consume", json=target.body, headers=headers)
                    good = resp.status_code == 200
                    if not good and not first_bad:
                        first_bad = f"{resp.status_code} {resp.text[:300]}"
                except httpx.HTTPError as exc:
                    good = False
                    first_bad = first_bad or repr(exc)
                end = time.monotonic()
                total_ok += good
                errors += not good
                if good and record_from <= end < stop_at:
                    latencies.append(end - start)

        measuring = asyncio.create_task(measure_window(record_from, stop_at, meter, sampler, on_measure_start))
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        cpu, waits = await measuring
    latencies.sort()
    return Result(len(latencies), seconds, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
                  total_ok, errors, {**cpu, "load generator (in bench)": cpu.pop("bench")}, waits, first_bad)


# ------------------------------------------------------------------------------------------------
# The bare transaction


async def bare_run(url: str, target: Target, *, concurrency: int, seconds: float, warmup: float,
                   meter: CpuMeter, sampler: WaitSampler) -> Result:
    """``concurrency`` asyncpg connections, each running the endpoint's transaction in a loop.
    Every started transaction finishes (commits or fails) before the run ends."""
    kwargs = {**asyncpg_connect_kwargs(url), "server_settings": {"application_name": BARE_APP_NAME}}
    conns = await asyncio.gather(*(asyncpg.connect(**kwargs) for _ in range(concurrency)))
    latencies: list[float] = []
    total_ok = errors = 0
    first_error = ""
    try:
        record_from = time.monotonic() + warmup
        stop_at = record_from + seconds

        async def one_client(conn: asyncpg.Connection) -> None:
            nonlocal errors, first_error, total_ok
            while time.monotonic() < stop_at:
                start = time.monotonic()
                try:
                    await bare_transaction(conn, target)
                    good = True
                except (asyncpg.PostgresError, RuntimeError) as exc:
                    good = False
                    first_error = first_error or repr(exc)
                end = time.monotonic()
                total_ok += good
                errors += not good
                if good and record_from <= end < stop_at:
                    latencies.append(end - start)

        measuring = asyncio.create_task(measure_window(record_from, stop_at, meter, sampler))
        await asyncio.gather(*(one_client(c) for c in conns))
        cpu, waits = await measuring
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    latencies.sort()
    return Result(len(latencies), seconds, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000,
                  total_ok, errors, cpu, waits, first_error)


# ------------------------------------------------------------------------------------------------
# Start-up check: the bare transaction sends what one API request sends (PostgreSQL's statement log)


LOG_LINE = re.compile(r"^(\d+)\|([^|]*)\|([A-Z]+):  (.*)$")


def read_statements(log: Path, start: int, end: int, application_name: str) -> list[tuple[str, str, str]]:
    """(kind, SQL with whitespace collapsed, parameters) of the statements ``application_name``'s
    sessions sent, from the log bytes [start, end) written with ``log_line_prefix = '%p|%a|'``."""
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    entries: list[list[str]] = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            entries.append(list(match.groups()))
        elif entries and line.startswith("\t"):
            entries[-1][3] += "\n" + line[1:]
    out: list[list[str]] = []
    for _pid, app, level, message in entries:
        if app != application_name:
            continue
        statement = re.match(r"(statement|execute [^:]*): (.*)", message, re.S)
        if level == "LOG" and statement:
            kind = "execute" if statement.group(1).startswith("execute") else "simple"
            out.append([kind, " ".join(statement.group(2).split()), ""])
        elif level == "DETAIL" and message.startswith("Parameters: ") and out:
            out[-1][2] = message[len("Parameters: "):]
        elif level in ("ERROR", "FATAL", "PANIC"):
            out.append([level, message, ""])
    return [tuple(s) for s in out]  # type: ignore[misc]


async def _set_statement_logging(conn: asyncpg.Connection, on: bool) -> None:
    if on:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute("ALTER SYSTEM SET log_line_prefix = '%p|%a|'")
    else:
        await conn.execute("ALTER SYSTEM RESET log_statement")
        await conn.execute("ALTER SYSTEM RESET log_line_prefix")
    await conn.execute("SELECT pg_reload_conf()")
    want = "all" if on else "none"
    for _ in range(100):  # the reload is asynchronous; every backend applies it before its next command
        if await conn.fetchval("SHOW log_statement") == want:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"log_statement did not become {want!r}")


async def check_statements(url: str, log: Path, base_url: str, target: Target) -> list[tuple[str, str, str]]:
    """Turn ``log_statement = all`` on for a moment, send API requests and bare transactions (the
    last of each is compared, the first ones warm the prepared statements up) and return the
    statements if both sent the same, else exit with both lists."""
    admin = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    bare = await asyncpg.connect(**asyncpg_connect_kwargs(url), server_settings={"application_name": BARE_APP_NAME})
    try:
        await _set_statement_logging(admin, True)
        try:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
                headers = {"Authorization": f"Bearer {target.service_key}"}
                for _ in range(2):
                    (await client.post("/api/v1/credits/consume", json=target.body, headers=headers)).raise_for_status()
                mark = log.stat().st_size
                (await client.post("/api/v1/credits/consume", json=target.body, headers=headers)).raise_for_status()
                await asyncio.sleep(0.2)
                api = read_statements(log, mark, log.stat().st_size, "pixelmint")
            await bare_transaction(bare, target)
            mark = log.stat().st_size
            await bare_transaction(bare, target)
            await asyncio.sleep(0.2)
            ours = read_statements(log, mark, log.stat().st_size, BARE_APP_NAME)
        finally:
            await _set_statement_logging(admin, False)
    finally:
        await bare.close()
        await admin.close()
    if not api or api != ours:
        def show(statements: list[tuple[str, str, str]]) -> str:
            return "\n".join(f"  [{k}] {sql}\n      params: {p or '-'}" for k, sql, p in statements) or "  (none)"
        print(f"statement check FAILED: one API request sent\n{show(api)}\nbut the bare transaction sent\n"
              f"{show(ours)}\nkeep bare_transaction() in step with the endpoint.", file=sys.stderr)
        raise SystemExit(2)
    return api


def statement_summary(statements: list[tuple[str, str, str]]) -> str:
    def name(sql: str) -> str:
        if sql.rstrip(";") in ("BEGIN", "COMMIT"):
            return sql.rstrip(";")
        if "INSERT INTO credit_transactions" in sql:
            return "CONSUME"
        match = re.search(r"\bFROM (\w+)", sql)
        return f"SELECT {match.group(1)}" if match else sql[:30]
    return "; ".join(name(sql) for _, sql, _ in statements)


# ------------------------------------------------------------------------------------------------
# Database, the team and the app, the server, the books


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


async def check_books(url: str, target: Target, before: asyncpg.Record, api: Result | None,
                      bare: Result | None) -> bool:
    """The team's balance equals its ledger, check_ledger is happy, and the consume rows written
    during the runs are the successes counted by the clients."""
    after = await ledger_state(url, target)
    ok = True
    balance = (after["allocation_credits"], after["bonus_credits"], after["reserved_credits"])
    sums = (after["allocation"], after["bonus"], after["reserved"])
    good = balance == sums
    ok &= good
    print(f"  balance = sum of ledger deltas: allocation/bonus/reserved {'/'.join(map(str, balance))} vs "
          f"{'/'.join(map(str, sums))} over {after['rows']} ledger rows  {'ok' if good else 'MISMATCH'}")
    rows = after["consumes"] - before["consumes"]
    api_ok = api.total_ok if api else 0
    bare_ok = bare.total_ok if bare else 0
    good = rows == api_ok + bare_ok
    ok &= good
    print(f"  consume rows written: {rows} = {api_ok} API 200s (warm-up and drain included) + {bare_ok} bare "
          f"commits = {api_ok + bare_ok}  {'ok' if good else 'MISMATCH'}")
    spent = (before["allocation_credits"] + before["bonus_credits"]) - (after["allocation_credits"] + after["bonus_credits"])
    consumed = after["consumed"] - before["consumed"]
    good = spent == consumed == rows * OPERATION_COST
    ok &= good
    print(f"  credits spent: {spent} = {rows} x {OPERATION_COST} (ledger amounts {consumed})  {'ok' if good else 'MISMATCH'}")
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as session:
            problems = await check_ledger(session)
    finally:
        await db.dispose()
    ok &= not problems
    print(f"  check_ledger: {'no problems' if not problems else f'{len(problems)} problems'}")
    for problem in problems[:10]:
        print(f"    {problem}")
    return ok


# ------------------------------------------------------------------------------------------------
# Main


async def main(args: argparse.Namespace) -> int:
    check_sql_matches_sqlalchemy()
    wrk = use_wrk(args.loadgen, args.py_spy)
    workdir = Path(tempfile.mkdtemp(prefix="/tmp/pmcw"))
    pg: BenchPostgres | None = None
    proc = None
    api: Result | None = None
    bare: Result | None = None
    try:
        t_setup = time.monotonic()
        pg = await BenchPostgres.open("/tmp/pmc")
        url = pg.url
        where = f"database {pg.bench_db} on DATABASE_URL" if pg.bench_db else f"embedded server {url}"
        await prepare_database(url)
        target = await create_target(url)
        port = free_port()
        rate_limits = {} if args.rate_limit == "keep" else {
            "PIXELMINT_RATE_LIMIT_CONSUME": args.rate_limit, "PIXELMINT_RATE_LIMIT_CONSUME_TEAM": args.rate_limit}
        proc = start_server(url, workdir, port, args.processes, rate_limits)
        base_url = f"http://127.0.0.1:{port}"
        settings = await pg_settings(url, "server_version", "synchronous_commit", "fsync", "max_connections")
        max_connections = int(settings["max_connections"])
        postmaster = await find_postmaster(url)
        print(f"PostgreSQL {settings['server_version']} ({where}; fsync={settings['fsync']}, "
              f"synchronous_commit={settings['synchronous_commit']}, max_connections={max_connections})")
        print(f"server: pixelmint serve --no-worker on {base_url} (pid {proc.pid}, {args.processes} process(es)); "
              f"load generator: {'wrk' if wrk else 'httpx'}; {args.concurrency} clients on one team; "
              f"{args.seconds} s measured after {args.warmup} s warm-up; {os.cpu_count()} CPUs; consume rate "
              f"limit per key and per team: {args.rate_limit or 'none'}")
        if pg.embedded_dir is not None:
            statements = await check_statements(url, pg.embedded_dir / "pg" / "log", base_url, target)
            print(f"statement check (log_statement=all): API request and bare transaction both send "
                  f"{statement_summary(statements)}, same parameters")
        else:
            print("statement check skipped (it reads the embedded server's log; run without DATABASE_URL)")
        print(f"setup took {time.monotonic() - t_setup:.1f} s")
        if args.concurrency + 5 > max_connections:
            print(f"WARNING: {args.concurrency} connections + a few more may exceed max_connections")
        await warn_if_machine_busy()
        before = await ledger_state(url, target)

        print(f"\nhot: {args.concurrency} clients consume '{OPERATION}' ({OPERATION_COST} credits) from one team")
        # bare first: its connections are closed before the server's pool grows to the API's
        # concurrency (both at once could pass max_connections).
        await checkpoint(url)
        bare = await bare_run(url, target, concurrency=args.concurrency, seconds=args.seconds, warmup=args.warmup,
                              meter=CpuMeter(None, postmaster),
                              sampler=WaitSampler(url, BARE_APP_NAME, args.sample_interval))
        print(fmt_result("bare", bare))
        print("       " + cpu_text(bare.cpu, ("postgres", "bench"), rest=True))
        if bare.waits:
            print("       " + bare.waits)

        profile_path = Path(args.py_spy) / "api-consume.txt" if args.py_spy else None
        on_measure = (lambda: start_profile(proc.pid, profile_path, args.seconds)) if profile_path else None
        if profile_path:
            profile_path.parent.mkdir(parents=True, exist_ok=True)
        await checkpoint(url)
        meter = CpuMeter(proc.pid, postmaster)
        sampler = WaitSampler(url, "pixelmint", args.sample_interval)
        if wrk:
            api = await api_wrk(base_url, target, concurrency=args.concurrency, seconds=args.seconds,
                                warmup=args.warmup, workdir=workdir, meter=meter, sampler=sampler,
                                on_measure_start=on_measure)
            print(fmt_result("API", api))
            print("       " + cpu_text(api.cpu, ("server", "postgres", "wrk", "bench"), rest=True))
        else:
            api = await api_httpx(base_url, target, concurrency=args.concurrency, seconds=args.seconds,
                                  warmup=args.warmup, meter=meter, sampler=sampler, on_measure_start=on_measure)
            print(fmt_result("API", api))
            print("       " + cpu_text(api.cpu, ("server", "postgres", "load generator (in bench)"), rest=True))
        if api.waits:
            print("       " + api.waits)
        if profile_path:
            print(f"  server profile ({profile_path}):")
            print(summarize_profile(profile_path))
        ratio = api.rate / bare.rate if bare.rate else float("nan")
        print(f"  API/bare throughput: {ratio:.2f}  (aim >= {AIM:.2f})")

        print("\nbooks")
        books_ok = await check_books(url, target, before, api, bare)

        print("\nsummary")
        print_summary_header()
        flag = "ok" if ratio >= AIM else f"below {AIM}"
        print(summary_row("hot", api, bare, ratio, flag))
        print(f"books: {'ok' if books_ok else 'MISMATCH'}")
        failed = api.errors or bare.errors or not api.count or not bare.count or not books_ok
        return 1 if failed else 0
    finally:
        if proc is not None:
            stop_server(proc)
        if pg is not None:
            await pg.close()
        shutil.rmtree(workdir, ignore_errors=True)


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
