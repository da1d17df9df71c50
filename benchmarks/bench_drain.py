#!/usr/bin/env python
"""Drain throughput of the job queue: real ``Worker`` processes against the bare claim/complete SQL.

Run (about 3-4 minutes with the defaults on a 2-core machine)::

    cd /work/main && .venv/bin/python benchmarks/bench_drain.py               # embedded PostgreSQL
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_drain.py
    .venv/bin/python benchmarks/bench_drain.py --jobs 4000 --teams 40 --processes 1,2   # quick
    .venv/bin/python benchmarks/bench_drain.py --py-spy /tmp/prof     # + worker profiles (slower)

What it does: gets a PostgreSQL (a throw-away embedded server, restarted with max_connections=400,
else fresh ``pmdrain_*`` databases on ``DATABASE_URL``), builds one migrated *template* database
with ``--teams`` teams (40 % basic = 1 job at a time, 40 % pro = 3, 20 % enterprise = 10; made by
``accounts.service.create_team``, no credits) and ``--jobs`` queued no-op ``image_generation`` jobs
spread evenly over them (one ``INSERT … SELECT generate_series``, ``has_ready`` raised). Every
run gets its own ``CREATE DATABASE … TEMPLATE`` copy, so every run starts from the same queue.

- **Worker runs**, one per ``--processes`` entry (default 1,2,4): that many subprocesses of this
  script (``--child``), each running one real ``pixelmint.jobs.worker.Worker`` (its own
  ``Database`` pool and ``JobEvents`` LISTEN connection, as ``pixelmint worker`` does, plain
  asyncio loop, structlog at ``--log-level``, default ``info`` as in production, written to a
  file, lease ``--lease-seconds`` = 30 s as in production) with ``--concurrency`` slots (32) and
  ``handlers={"image_generation": noop}`` where ``noop`` returns ``TaskOutcome(result={})`` at
  once. The children connect and warm their pool, say "ready", and all start together; the parent
  polls the job states every 0.5 s and stops them (SIGTERM → ``Worker.stop``) once every job has
  finished. Any log event other than job_succeeded (a cancellation, a failure) fails the run.
- **Bare runs**, one per ``--bare`` spec ``CxD`` (default ``8x4,2x16``: both 32 jobs in flight,
  as one worker process): the same drain with asyncpg only (no SQLAlchemy, no Worker; uvloop if
  installed) on C connections, each looping ``SELECT * FROM pixelmint_claim_jobs($worker, D,
  $lease)`` (one implicit transaction) and then, per claimed job, the worker's completion
  transaction for a job without a reservation, statement for statement and parameter for parameter
  as ``queue.mark_succeeded`` sends it: recorded at start-up from one real call through SQLAlchemy
  and replayed with each job's id, worker and attempt (today: ``BEGIN``, the fenced ``UPDATE jobs
  … RETURNING *``, the ORM flush ``UPDATE jobs SET charged_credits …``, ``UPDATE job_attempts SET
  finished_at …``, the ``pg_notify`` pair, ``COMMIT``). A connection whose claim
  comes back empty (every team with queued jobs at its limit) waits for the next completion in
  this process (one waiter per completion) or 50 ms. Claiming several jobs per call pays here (a
  claim costs about a millisecond of PostgreSQL whatever it returns): on 2 cores ``8x4`` and
  ``2x16`` were the best of the shapes tried, ``32x1`` (one connection per worker slot) ran at
  about half their rate.

Throughput is read from the database: succeeded jobs / (max(job_attempts.finished_at) -
min(job_attempts.started_at)), i.e. first claim to last completion. After every run it checks that
all jobs succeeded in one attempt, that no team ever ran more jobs at once than its plan allows
(from the job_attempts intervals) and prints, per plan, the min/median/max of jobs each team
finished during the first half of the run (fairness; plan priority is served first, round robin
within a plan) and when each plan's last job finished, the claim calls and commits per job
(``pg_stat_user_functions`` / ``pg_stat_database``; a LISTENing backend commits once per
notification batch it reads) and where the CPU went (worker processes or this process, and
PostgreSQL; in % of one core and ms per job). The summary gives jobs/s and Worker/bare (project
aim: >= 0.5, against the best bare run) for the 1-process run and the best multi-process run.
Exit status 1 if any run lost or cancelled a job or broke a plan limit.
"""

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
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg

from harness import (
    BenchPostgres,
    CpuMeter,
    Recording,
    admin_execute,
    copy_database,
    drop_database,
    find_postmaster,
    pg_settings,
    py_spy_executable,
    recording,
    run_main,
    settle,
    start_profile,
    summarize_profile,
    warn_if_machine_busy,
)
from pixelmint.kit.db import Database, asyncpg_connect_kwargs, with_database

PLANS = (("enterprise", 10, 0.2), ("pro", 3, 0.4), ("basic", 1, 0.4))  # code, limit, share of teams
NOOP_PARAMS = (  # tests/helpers.py NOOP_PARAMS
    '{"prompt": "p", "negativePrompt": null, "width": 64, "height": 64, "quality": "standard", '
    '"numImages": 1, "seed": 1, "modelKey": "business-headshot"}'
)
EMBEDDED_MAX_CONNECTIONS = 400
POLL_SECONDS = 0.5

# ------------------------------------------------------------------------------------------------
# The bare SQL. The claim is Worker._claim_available's statement as SQLAlchemy's asyncpg dialect
# renders it; the completion is *recorded* at start-up (capture_completion): one real
# ``queue.mark_succeeded`` through SQLAlchemy, every statement and its parameters, which the bare
# loop then replays per job with that job's values. So the bare loop sends what the worker sends
# even while queue.py changes.

CLAIM_SQL = "SELECT * FROM pixelmint_claim_jobs($1, $2, $3)"
CHECK_WORKER = "sqlcheck-worker"
CHECK_ATTEMPT = 41  # distinctive, so that the recorded parameters can be told apart


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
# The child: one real Worker with a no-op handler


async def child_main(args: argparse.Namespace) -> None:
    from pixelmint.jobs.events import JobEvents
    from pixelmint.jobs.tasks import TaskOutcome
    from pixelmint.jobs.worker import Worker
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
        worker_id=args.worker_id, handlers={"image_generation": noop},
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


def cpu_per_job(cpu: dict[str, float], keys: tuple[str, ...], jobs: int) -> str:
    """CPU (:class:`harness.CpuMeter`) as a share of one core over the drain and in ms per job."""
    wall = cpu["wall"]
    parts = [f"{k} {cpu[k] * 100:.0f}% ({cpu[k] * wall / max(jobs, 1) * 1000:.2f} ms/job)"
             if cpu[k] == cpu[k] else f"{k} n/a" for k in keys]
    if cpu.get("workers") and "workers" in keys:
        parts[keys.index("workers")] += f" of which {cpu['workers_sys'] / cpu['workers']:.0%} in the kernel"
    return (f"cpu (share of one core over {wall:.1f} s): {', '.join(parts)}; "
            f"machine busy {cpu['machine'] * 100:.0f}% of {(os.cpu_count() or 1) * 100}%")


# ------------------------------------------------------------------------------------------------
# Databases


@dataclass
class Setup:
    admin_url: str  # a database to run CREATE/DROP DATABASE from
    template: str
    teams: dict[uuid.UUID, str]  # team id → plan code
    jobs: int


async def build_template(admin_url: str, name: str, *, teams: int, jobs: int) -> Setup:
    """A migrated database with the teams and their queued jobs, for CREATE DATABASE … TEMPLATE."""
    from pixelmint.bootstrap import prepare_database
    from pixelmint.flows.teams import create_team

    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = with_database(admin_url, name)
    await prepare_database(url)
    counts = {code: round(teams * share) for code, _, share in PLANS}
    counts["basic"] = teams - counts["enterprise"] - counts["pro"]
    plan_of: dict[uuid.UUID, str] = {}
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as session:
            for code, _, _ in PLANS:
                for i in range(counts[code]):
                    created = await create_team(session, name=f"drain-{code}-{i}", plan_code=code,
                                                credits_amount=Decimal("0"), free_generations=0)
                    plan_of[created.team_id] = code
    finally:
        await db.dispose()
    team_ids = list(plan_of)
    per_team = [jobs // teams + (1 if i < jobs % teams else 0) for i in range(teams)]
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        async with conn.transaction():
            await conn.execute(
                """
                INSERT INTO jobs (team_id, type, params, provider, estimated_credits, reference_model_id, created_at)
                SELECT t.id, 'image_generation', CAST($3 AS jsonb), 'procedural', 0, 'business-headshot',
                       clock_timestamp()
                  FROM unnest($1::uuid[], $2::int[]) AS t(id, n), generate_series(1, t.n)
                """,
                team_ids, per_team, NOOP_PARAMS,
            )
            await conn.execute("UPDATE team_dispatch SET has_ready = true WHERE team_id = ANY($1::uuid[])", team_ids)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return Setup(admin_url, name, plan_of, sum(per_team))


async def fresh_database(setup: Setup, label: str) -> tuple[str, str]:
    name = f"pmdrain_{label}_{secrets.token_hex(3)}"
    return name, await copy_database(setup.admin_url, setup.template, name)


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
    for code, limit, _ in PLANS:
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


# ------------------------------------------------------------------------------------------------
# Worker runs

LOG_EVENT = re.compile(r"\[(\w+)\s*\]\s+(\S+)")  # structlog ConsoleRenderer: "<time> [info     ] event k=v"
ROUTINE_EVENTS = {"worker_started", "worker_stopped", "job_succeeded"}


async def worker_run(setup: Setup, args: argparse.Namespace, processes: int, workdir: Path,
                     postmaster: int | None) -> Run:
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
                    sys.executable, str(Path(__file__).resolve()), "--child", "--url", url,
                    "--worker-id", f"worker{i}", "--concurrency", str(args.concurrency),
                    "--log-level", args.log_level, "--lease-seconds", str(args.lease_seconds),
                    "--worker-loop", args.worker_loop,
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
# Bare runs


async def bare_run(setup: Setup, args: argparse.Namespace, connections: int, demand: int,
                   completion: Recording, postmaster: int | None) -> Run:
    run = Run(f"bare {connections}x{demand}", "bare", connections * demand)
    name, url = await fresh_database(setup, f"b{connections}x{demand}")
    kwargs = asyncpg_connect_kwargs(url)
    conns = await asyncio.gather(*(asyncpg.connect(**kwargs) for _ in range(connections)))
    completed = 0
    failures: list[str] = []
    all_done = asyncio.Event()
    slot_freed = asyncio.Condition()
    lease = args.lease_seconds

    async def loop(i: int) -> None:
        nonlocal completed
        conn = conns[i]
        worker_id = f"bare{i}"
        while not all_done.is_set():
            jobs = await conn.fetch(CLAIM_SQL, worker_id, demand, lease)
            if not jobs:
                # Nothing claimable: every team with queued jobs is at its limit. Wait until a job
                # finishes (one waiter per finished job, as a slot-freed wake-up), or 50 ms.
                async with slot_freed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(slot_freed.wait(), 0.05)
                continue
            for job in jobs:
                async with conn.transaction():
                    fence = {"job_id": job["id"], "worker_id": worker_id, "attempt": job["attempt"]}
                    if not await conn.fetch(completion.statements[0][0], *completion.args(0, **fence)):
                        failures.append(f"lost job {job['id']}")  # the fence did not hold
                        continue
                    for index in range(1, len(completion.statements)):
                        await conn.execute(completion.statements[index][0], *completion.args(index, **fence))
                completed += 1
                async with slot_freed:
                    slot_freed.notify(1)
            if completed >= setup.jobs:
                all_done.set()

    try:
        for conn in conns:  # prepare the statements (a long-running worker has them cached)
            for sql in (CLAIM_SQL, *(statement for statement, _ in completion.statements)):
                await conn.prepare(sql)
        meter = CpuMeter(None, postmaster)
        meter.start()
        tasks = [asyncio.create_task(loop(i)) for i in range(connections)]
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(all_done.wait())], timeout=args.timeout,
                                     return_when=asyncio.FIRST_EXCEPTION)
        run.cpu = meter.stop()
        if not all_done.is_set():
            run.ok = False
            errors = [t.exception() for t in done if t in tasks and t.exception()]
            run.report.append(f"  !! bare run stopped at {completed} of {setup.jobs}: {errors[:1] or 'timeout'}")
        all_done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    if failures:
        run.ok = False
        run.report.append(f"  !! {len(failures)} failures, first: {failures[0]}")
    await settle(url)
    await analyse(run, setup, url)
    run.report.append("  " + cpu_per_job(run.cpu, ("bench", "postgres"), run.jobs))
    await drop_database(setup.admin_url, name)
    return run


# ------------------------------------------------------------------------------------------------
# Main


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
        setup = await build_template(admin_url, template, teams=args.teams, jobs=args.jobs)
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
                run = await worker_run(setup, args, n, workdir, postmaster)
            else:
                print(f"\nbare {n}x{demand}: {n} asyncpg connections, claim demand {demand}", flush=True)
                run = await bare_run(setup, args, n, demand, completion, postmaster)
            print("\n".join(run.report), flush=True)
            runs.append(run)

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
        one = next((r for r in workers if r.slots == args.concurrency), None)
        multi = [r for r in workers if r.slots > args.concurrency]
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
    # internal: one worker process
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        if arguments.worker_loop == "uvloop":
            import uvloop

            uvloop.run(child_main(arguments))
        else:
            asyncio.run(child_main(arguments))  # plain asyncio, as `pixelmint worker` runs
        sys.exit(0)
    if arguments.py_spy and not py_spy_executable():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    run_main(main, arguments)
