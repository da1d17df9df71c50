"""Shared pieces of the job-queue benchmarks (``bench_drain.py``): the template database every run
copies, real ``Worker`` processes (this file is also their entry point), the bare drain's
scaffolding, and the analysis of a drained database (throughput, one attempt per job, plan limits,
fairness, claim calls and commits) with the summary table. A queue benchmark states its scenario
(the teams and jobs in the template, the job handler) and its bare claim/complete loop and takes
the rest from here. Imported as ``queue_harness``, run as a script only by :func:`worker_run`."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from harness import (
    CpuMeter,
    admin_execute,
    connections,
    copy_database,
    cpu_per_job,
    drop_database,
    load_loop,
    session,
    settle,
    start_profile,
    summarize_profile,
)
from pixelmint.kit.db import asyncpg_connect_kwargs, with_database

Plans = tuple[tuple[str, int, float], ...]  # (plan code, jobs a team may run at once, share of the teams)
POLL_SECONDS = 0.5

# tests/jobs/test_concurrency.py MAX_CONCURRENT: the most jobs each team ever had running at once,
# from the [started_at, finished_at) intervals of its attempts (a finish sorts before a start at a tie).
MAX_CONCURRENT_SQL = """
WITH ev AS (
    SELECT team_id, started_at AS t, 1 AS d FROM job_attempts
    UNION ALL SELECT team_id, finished_at, -1 FROM job_attempts
), run AS (
    SELECT team_id, sum(d) OVER (PARTITION BY team_id ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS concurrent FROM ev
)
SELECT team_id, max(concurrent) AS max_concurrent FROM run GROUP BY team_id
"""


# ------------------------------------------------------------------------------------------------
# The template database


@dataclass
class Setup:
    admin_url: str  # a database to run CREATE/DROP DATABASE from
    template: str
    teams: dict[uuid.UUID, str]  # team id → plan code
    jobs: int
    plans: Plans


async def create_plan_teams(url: str, teams: int, plans: Plans, prefix: str) -> dict[uuid.UUID, str]:
    """``teams`` teams split over ``plans`` by their shares (the last plan takes the remainder),
    made by ``flows.teams.create_team`` without credits; team id → plan code."""
    from pixelmint.flows.teams import create_team

    counts = {code: round(teams * share) for code, _, share in plans}
    counts[plans[-1][0]] = teams - sum(counts[code] for code, _, _ in plans[:-1])
    plan_of: dict[uuid.UUID, str] = {}
    async with session(url) as s:
        for code, _, _ in plans:
            for i in range(counts[code]):
                created = await create_team(s, name=f"{prefix}-{code}-{i}", plan_code=code,
                                            credits_amount=Decimal("0"), free_generations=0)
                plan_of[created.team_id] = code
    return plan_of


async def build_template(admin_url: str, name: str, plans: Plans,
                         populate: Callable[[str], Awaitable[tuple[dict[uuid.UUID, str], int]]]) -> Setup:
    """A migrated database ``name`` filled by ``populate(url)`` (→ team id → plan, queued jobs) and
    vacuumed, for every run's ``CREATE DATABASE … TEMPLATE``."""
    from pixelmint.bootstrap import prepare_database

    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    await prepare_database(url)
    teams, jobs = await populate(url)
    await admin_execute(url, "VACUUM ANALYZE")
    return Setup(admin_url, name, teams, jobs, plans)


async def fresh_database(setup: Setup, label: str) -> tuple[str, str]:
    """A copy of the template (name, URL), for one run."""
    name = f"pmdrain_{label}_{secrets.token_hex(3)}"
    return name, await copy_database(setup.admin_url, setup.template, name)


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class Run:
    label: str
    kind: str  # "worker" or "bare"
    slots: int  # worker slots (processes × concurrency) or bare connections × demand
    jobs: int = 0
    seconds: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    ok: bool = True
    limits_ok: bool = True

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds and self.seconds == self.seconds else 0.0


async def analyse(run: Run, setup: Setup, url: str) -> None:
    """Throughput, correctness, limits and fairness, from the run's database."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        states = dict(await conn.fetch("SELECT state, count(*) FROM jobs GROUP BY state"))
        summary = await conn.fetchrow("""
            SELECT count(*) AS attempts, count(DISTINCT job_id) AS jobs, min(started_at) AS t0,
                   max(finished_at) AS t1, count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
                   count(DISTINCT worker_id) AS workers
              FROM job_attempts""")
        t0: dt.datetime = summary["t0"]
        t1: dt.datetime = summary["t1"]
        run.jobs = states.get("succeeded", 0)
        run.seconds = (t1 - t0).total_seconds()
        observed = {r["team_id"]: r["max_concurrent"] for r in await conn.fetch(MAX_CONCURRENT_SQL)}
        half = t0 + (t1 - t0) / 2
        first_half = dict(await conn.fetch(
            "SELECT team_id, count(*) FROM job_attempts WHERE finished_at < $1 GROUP BY team_id", half))
        per_worker = sorted(r["n"] for r in await conn.fetch(
            "SELECT worker_id, count(*) AS n FROM job_attempts GROUP BY worker_id"))
        finished_by_plan = {r["plan_code"]: r["t"] for r in await conn.fetch("""
            SELECT t.plan_code, max(a.finished_at) AS t FROM job_attempts a JOIN teams t ON t.id = a.team_id
             GROUP BY t.plan_code""")}
        claims = await conn.fetchrow(
            "SELECT calls, total_time FROM pg_stat_user_functions WHERE funcname = 'pixelmint_claim_jobs'")
        commits = await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()

    lines = run.report
    good = (states == {"succeeded": setup.jobs} and summary["attempts"] == setup.jobs
            and summary["succeeded"] == setup.jobs)
    run.ok = run.ok and good
    lines.append(f"  {run.jobs} jobs succeeded in {run.seconds:.2f} s (first claim -> last completion): "
                 f"{run.rate:,.0f} jobs/s" + ("" if good else f"   !! states {states}, attempts {summary['attempts']}"))
    canceled = states.get("canceled", 0)
    if canceled and run.kind == "worker":
        lines.append(f"  !! {canceled} jobs canceled that nobody asked to cancel: the heartbeat race? "
                     "(Worker._heartbeat cancels every running job missing from the extend_leases answer, "
                     "including jobs claimed while that UPDATE was in flight)")
    extra = []
    if claims is not None and claims["calls"]:
        extra.append(f"{claims['calls'] / setup.jobs:.2f} claim calls/job "
                     f"({claims['total_time'] / claims['calls']:.2f} ms each, {setup.jobs / claims['calls']:.1f} jobs/claim)")
    if commits:
        extra.append(f"{commits / setup.jobs:.2f} commits/job (LISTENing backends commit one per notification batch read)")
    if per_worker and run.kind == "worker":
        extra.append(f"jobs per worker process {'/'.join(str(n) for n in per_worker)}")
    if extra:
        lines.append("  " + "; ".join(extra))
    over = 0
    lines.append(f"  {'plan':<11}{'teams':>6}{'limit':>6}{'max running':>12}{'over limit':>11}"
                 f"   first-half jobs/team min/median/max   drained at")
    for code, limit, _ in setup.plans:
        teams = [t for t, p in setup.teams.items() if p == code]
        if not teams:
            continue
        maxes = [observed.get(t, 0) for t in teams]
        n_over = sum(m > limit for m in maxes)
        over += n_over
        shares = sorted(first_half.get(t, 0) for t in teams)
        drained = (finished_by_plan[code] - t0).total_seconds() if code in finished_by_plan else float("nan")
        lines.append(f"  {code:<11}{len(teams):>6}{limit:>6}{max(maxes):>12}{n_over:>11}"
                     f"   {shares[0]:>6} / {statistics.median(shares):>6g} / {shares[-1]:>6}"
                     f"          {drained:6.2f} s")
    lines.append(f"  plan limits: {'OK, no team ever exceeded its limit' if not over else f'{over} TEAMS OVER THEIR LIMIT'}")
    run.limits_ok = not over
    run.ok = run.ok and not over


def print_summary(runs: list[Run], concurrency: int) -> None:
    """The table of all runs, then Worker/bare for the 1-process run and the best multi-process run
    (``concurrency`` slots per process) against the best bare run (project aim: >= 0.5)."""
    print("\nsummary")
    header = (f"{'run':<12}{'slots':>6}{'jobs':>7}{'seconds':>9}{'jobs/s':>8}   "
              f"{'client CPU':>10}{'PG CPU':>8} ms/job   {'limits':<7}{'all ok':<6}")
    print(header)
    print("-" * len(header))
    for run in runs:
        wall = run.cpu.get("wall", float("nan"))
        client = run.cpu.get("workers" if run.kind == "worker" else "bench", float("nan")) * wall
        pg_cpu = run.cpu.get("postgres", float("nan")) * wall
        print(f"{run.label:<12}{run.slots:>6}{run.jobs:>7}{run.seconds:>9.2f}{run.rate:>8,.0f}   "
              f"{client / max(run.jobs, 1) * 1000:>10.2f}{pg_cpu / max(run.jobs, 1) * 1000:>8.2f}          "
              f"{'ok' if run.limits_ok else 'OVER':<7}{'yes' if run.ok else 'NO':<6}")
    bare = [r for r in runs if r.kind == "bare"]
    best_bare = max(bare, key=lambda r: r.rate)
    workers = [r for r in runs if r.kind == "worker"]
    one = next((r for r in workers if r.slots == concurrency), None)
    multi = [r for r in workers if r.slots > concurrency]
    best_multi = max(multi, key=lambda r: r.rate) if multi else None
    print()
    for title, run in (("1 process", one), ("best multi-process", best_multi)):
        if run is None or not best_bare.rate:
            continue
        ratio = run.rate / best_bare.rate
        others = "".join(f"; {run.rate / b.rate:.2f} vs {b.label}" for b in bare if b is not best_bare and b.rate)
        print(f"Worker/bare, {title} ({run.label}, {run.rate:,.0f} jobs/s): {ratio:.2f} vs the best bare run "
              f"({best_bare.label}, {best_bare.rate:,.0f} jobs/s){others}  "
              f"[aim >= 0.5: {'ok' if ratio >= 0.5 else 'BELOW'}]")


# ------------------------------------------------------------------------------------------------
# Worker runs: real Worker processes (this file run as a script) with a no-op handler


async def worker_main(args: argparse.Namespace) -> None:
    """One worker process: a real ``pixelmint.jobs.worker.Worker`` (its own pool and ``JobEvents``
    LISTEN connection, as ``pixelmint worker`` runs it) whose handler for ``--job-type`` returns
    ``TaskOutcome(result={})`` at once; it warms its pool, writes "ready" to ``--ready-fd``, runs
    once "go" arrives on stdin and stops on SIGTERM/SIGINT."""
    from pixelmint.jobs.events import JobEvents
    from pixelmint.jobs.tasks import TaskOutcome
    from pixelmint.jobs.worker import Worker
    from pixelmint.kit.db import Database
    from pixelmint.kit.logging import configure_logging
    from pixelmint.providers.registry import Providers
    from pixelmint.settings import Settings
    from pixelmint.storage.backend import LocalStorage

    async def noop(_ctx, _job):  # type: ignore[no-untyped-def]
        return TaskOutcome(result={})

    configure_logging(args.log_level)
    settings = Settings(_env_file=None, database_url=args.url, data_dir=Path(args.data_dir),
                        worker_concurrency=args.concurrency, lease_seconds=args.lease_seconds)
    # The pool a Worker needs never to wait: a claim, one finish per slot, heartbeat and rescue.
    db = Database.connect(args.url, pool_size=args.concurrency + 2)
    events = JobEvents(args.url)
    await events.start()
    worker = Worker(
        db=db, events=events, settings=settings, providers=Providers.from_settings(settings),
        storage=LocalStorage(settings.storage_dir, "bench"), concurrency=args.concurrency,
        worker_id=args.worker_id, handlers={args.job_type: noop},
    )
    # Warm the pool (a long-running worker has its connections open) before the start signal.
    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(db.engine.connect()) for _ in range(args.concurrency + 2)]
        for conn in conns:
            await conn.exec_driver_sql("SELECT 1")
            await conn.rollback()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    os.write(args.ready_fd, b"ready\n")  # stdout and stderr go to the log file
    os.close(args.ready_fd)
    go = await loop.run_in_executor(None, sys.stdin.readline)
    if go.strip() == "go":
        await worker.run()
    await events.stop()
    await db.dispose()


LOG_EVENT = re.compile(r"\[(\w+)\s*\]\s+(\S+)")  # structlog ConsoleRenderer: "<time> [info     ] event k=v"
ROUTINE_EVENTS = {"worker_started", "worker_stopped", "job_succeeded"}


async def worker_run(setup: Setup, args: argparse.Namespace, processes: int, job_type: str, workdir: Path,
                     postmaster: int | None) -> Run:
    """Drain a copy of the template with ``processes`` worker processes (:func:`worker_main`; from
    ``args``: concurrency, log_level, lease_seconds, worker_loop, timeout, py_spy), started together
    once all are ready and stopped (SIGTERM) once every job has finished; any log event but the
    routine ones fails the run."""
    run = Run(f"Worker x{processes}", "worker", processes * args.concurrency)
    name, url = await fresh_database(setup, f"w{processes}")
    children: list[asyncio.subprocess.Process] = []
    spies: list[subprocess.Popen[bytes]] = []
    profiles: list[Path] = []
    logs = [workdir / f"{name}-worker{i}.log" for i in range(processes)]
    try:
        ready_pipes = []
        for i in range(processes):
            read_fd, write_fd = os.pipe()
            ready_pipes.append(read_fd)
            with open(logs[i], "wb") as log:
                children.append(await asyncio.create_subprocess_exec(
                    sys.executable, str(Path(__file__).resolve()), "--url", url,
                    "--worker-id", f"worker{i}", "--concurrency", str(args.concurrency),
                    "--log-level", args.log_level, "--lease-seconds", str(args.lease_seconds),
                    "--worker-loop", args.worker_loop, "--job-type", job_type,
                    "--data-dir", str(workdir / "data"), "--ready-fd", str(write_fd),
                    stdin=asyncio.subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                ))
            os.close(write_fd)
        for i, read_fd in enumerate(ready_pipes):
            with open(read_fd, "rb") as pipe:  # EOF without "ready": the child died
                line = await asyncio.wait_for(asyncio.to_thread(pipe.readline), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"worker {i} did not start:\n{logs[i].read_text()[-3000:]}")
        if args.py_spy:
            profiles = [Path(args.py_spy) / f"worker-x{processes}-{i}.txt" for i in range(processes)]
            spies = [start_profile(child.pid, out, rate=200) for child, out in zip(children, profiles, strict=True)]
            await asyncio.sleep(1.0)  # let py-spy attach
        meter = CpuMeter(None, postmaster, workers=[c.pid for c in children])
        meter.start()
        for child in children:
            child.stdin.write(b"go\n")  # type: ignore[union-attr]
            await child.stdin.drain()  # type: ignore[union-attr]
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
        deadline = time.monotonic() + args.timeout
        try:
            while True:
                await asyncio.sleep(POLL_SECONDS)
                row = await conn.fetchrow("""SELECT count(*) FILTER (WHERE state = 'succeeded') AS ok,
                                                    count(*) FILTER (WHERE state IN ('failed', 'canceled', 'expired')) AS bad
                                               FROM jobs""")
                if row["ok"] + row["bad"] >= setup.jobs:
                    break
                dead = [i for i, c in enumerate(children) if c.returncode is not None]
                if dead or time.monotonic() > deadline:
                    run.ok = False
                    run.report.append(f"  !! {'worker exited' if dead else 'timed out'}: {row['ok']} succeeded, "
                                      f"{row['bad']} failed of {setup.jobs}")
                    break
        finally:
            await conn.close()
        run.cpu = meter.stop()
    finally:
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 30)
            except TimeoutError:
                child.kill()
                await child.wait()
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
    await settle(url)
    unusual: collections.Counter[str] = collections.Counter()  # log events other than the routine ones
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            match = LOG_EVENT.search(line)
            event = f"{match.group(2)} ({match.group(1)})" if match else "unparsed line"
            if not match or match.group(2) not in ROUTINE_EVENTS:
                unusual[event] += 1
    await analyse(run, setup, url)
    run.report.append("  " + cpu_per_job(run.cpu, ("workers", "postgres"), run.jobs))
    if unusual:
        run.ok = False
        run.report.append("  !! worker log events: " + ", ".join(f"{k} x{v}" for k, v in unusual.most_common(6)))
    if not run.ok:
        kept = Path(tempfile.mkdtemp(prefix="/tmp/pmdrain-logs-"))
        for log in logs:
            shutil.copy(log, kept)
        run.report.append(f"  worker logs kept in {kept}")
    if profiles:
        run.report.append(f"  worker profile ({', '.join(str(p) for p in profiles)}; py-spy slows the workers):")
        run.report.append(summarize_profile(*profiles, top=18))
    await drop_database(setup.admin_url, name)
    return run


# ------------------------------------------------------------------------------------------------
# Bare runs: the scenario's claim/complete loop on asyncpg connections


class BareDrain:
    """What the connections of a bare run share: jobs ``completed`` of ``jobs``, ``failures``,
    ``all_done``, and one wake-up per completion for a connection whose claim came back empty."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.completed = 0
        self.failures: list[str] = []
        self.all_done = asyncio.Event()
        self._slot_freed = asyncio.Condition()

    async def wait_for_slot(self, seconds: float = 0.05) -> None:
        """Until a job finishes (one waiter per finished job, as a slot-freed wake-up), or ``seconds``."""
        async with self._slot_freed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), seconds)

    async def finished_one(self) -> None:
        self.completed += 1
        async with self._slot_freed:
            self._slot_freed.notify(1)

    def check_done(self) -> None:
        if self.completed >= self.jobs:
            self.all_done.set()


async def bare_run(setup: Setup, label: str, tag: str, connection_count: int, slots: int,
                   drain: Callable[[asyncpg.Connection, int, BareDrain], Coroutine[Any, Any, None]], *,
                   prepare: list[str], timeout: float, postmaster: int | None) -> Run:
    """Drain a copy of the template with ``drain(conn, i, state)`` on each of ``connection_count``
    asyncpg connections (``prepare``'s statements prepared first, as a long-running worker has
    them cached) until every job is done or ``timeout``."""
    run = Run(label, "bare", slots)
    name, url = await fresh_database(setup, tag)
    state = BareDrain(setup.jobs)
    async with connections(url, connection_count) as conns:
        for conn in conns:
            for sql in prepare:
                await conn.prepare(sql)
        meter = CpuMeter(None, postmaster)
        meter.start()
        tasks = [asyncio.create_task(drain(conns[i], i, state)) for i in range(connection_count)]
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(state.all_done.wait())], timeout=timeout,
                                     return_when=asyncio.FIRST_EXCEPTION)
        run.cpu = meter.stop()
        if not state.all_done.is_set():
            run.ok = False
            errors = [t.exception() for t in done if t in tasks and t.exception()]
            run.report.append(f"  !! bare run stopped at {state.completed} of {setup.jobs}: {errors[:1] or 'timeout'}")
        state.all_done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    if state.failures:
        run.ok = False
        run.report.append(f"  !! {len(state.failures)} failures, first: {state.failures[0]}")
    await settle(url)
    await analyse(run, setup, url)
    run.report.append("  " + cpu_per_job(run.cpu, ("bench", "postgres"), run.jobs))
    await drop_database(setup.admin_url, name)
    return run


# ------------------------------------------------------------------------------------------------
# Claim throughput over a window (bench_scale.py)

CLAIM_SQL = "SELECT id, attempt FROM pixelmint_claim_jobs($1, $2, $3)"
# A worker's completion of a job that holds no credits, reduced to the queue rows, in one statement.
FINISH_SQL = """WITH j AS (UPDATE jobs SET state = 'succeeded', finished_at = now(), progress = 100, locked_by = NULL,
    lease_expires_at = NULL WHERE id = $1 AND locked_by = $2 AND attempt = $3 AND state = 'running' RETURNING id, attempt)
UPDATE job_attempts a SET finished_at = now(), outcome = 'succeeded' FROM j WHERE a.job_id = j.id AND a.attempt = j.attempt"""


async def claim_rate(url: str, connection_count: int, demand: int, *, seconds: float, warmup: float,
                     postmaster: int | None) -> float:
    """Jobs/s claimed over ``seconds`` (after ``warmup``) by ``connection_count`` asyncpg
    connections, each calling ``pixelmint_claim_jobs`` for ``demand`` jobs and completing each
    (``FINISH_SQL``) in a loop, from whatever is queued (the jobs must hold no credits)."""
    claimed = 0
    async with connections(url, connection_count) as conns:
        async def attempt(i: int) -> None:
            nonlocal claimed
            jobs = await conns[i].fetch(CLAIM_SQL, f"claimer{i}", demand, 30.0)
            for job in jobs:
                await conns[i].execute(FINISH_SQL, job["id"], f"claimer{i}", job["attempt"])
            if window[0] <= time.monotonic() < window[1]:
                claimed += len(jobs)

        window = (time.monotonic() + warmup, time.monotonic() + warmup + seconds)
        await load_loop(attempt, clients=connection_count, seconds=seconds, warmup=warmup,
                        meter=CpuMeter(None, postmaster))
    return claimed / seconds


if __name__ == "__main__":  # one worker process of worker_run
    parser = argparse.ArgumentParser(description="one worker process of a queue benchmark (see worker_run)")
    for option in ("--url", "--worker-id", "--log-level", "--worker-loop", "--job-type", "--data-dir"):
        parser.add_argument(option, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--lease-seconds", type=float, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    arguments = parser.parse_args()
    if arguments.worker_loop == "uvloop":
        import uvloop

        uvloop.run(worker_main(arguments))
    else:
        asyncio.run(worker_main(arguments))  # plain asyncio, as `pixelmint worker` runs
    sys.exit(0)
