"""Shared pieces of the benchmarks in this folder: a PostgreSQL to run on, the ``pixelmint serve``
subprocess, CPU accounting from /proc, py-spy profiles, ``:name`` → ``$n`` SQL rewriting and the
result lines the API-vs-bare benchmarks print. Imported as ``harness`` (the scripts' own folder is
on ``sys.path`` when run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
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
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from pixelmint.kit.db import asyncpg_connect_kwargs, embedded_server, with_database

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


class BenchPostgres:
    """A PostgreSQL for one benchmark: a fresh ``pixelmint_bench_<random>`` database on
    ``DATABASE_URL`` if set, else a throw-away embedded server in a ``tmp_prefix`` directory.
    ``url`` is where to run; :meth:`close` drops the database or deletes the server."""

    def __init__(self) -> None:
        self.admin_url = os.environ.get("DATABASE_URL")
        self.bench_db: str | None = None
        self.server: Any = None  # the embedded server's handle
        self.embedded_dir: Path | None = None
        self.url = ""

    @classmethod
    async def open(cls, tmp_prefix: str) -> BenchPostgres:
        pg = cls()
        if pg.admin_url:
            pg.bench_db = f"pixelmint_bench_{secrets.token_hex(4)}"
            await admin_execute(pg.admin_url, f'CREATE DATABASE "{pg.bench_db}"')
            pg.url = with_database(pg.admin_url, pg.bench_db)
        else:
            pg.embedded_dir = Path(tempfile.mkdtemp(prefix=tmp_prefix))
            try:
                pg.server = embedded_server(pg.embedded_dir, cleanup_mode="delete")
            except BaseException:
                shutil.rmtree(pg.embedded_dir, ignore_errors=True)
                raise
            pg.url = pg.server.get_uri()
        return pg

    async def close(self) -> None:
        if self.bench_db and self.admin_url:
            with contextlib.suppress(Exception):
                await admin_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{self.bench_db}" WITH (FORCE)')
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


def with_children(parent: int | None) -> list[int]:
    """A process and its direct children."""
    if parent is None:
        return []
    pids = [parent]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and ppid(int(entry)) == parent:
            pids.append(int(entry))
    return pids


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
    """CPU used between ``start`` and ``stop``, as a share of one core: the server process (and its
    workers), the local PostgreSQL processes alive at both ends (the runs keep their connections
    open, so their backends are), the load generator (``wrk``: read from /proc while it runs if
    ``loadgen_pid`` is set, else the children this process reaped meanwhile), this process, the
    whole machine and the rest of it."""

    def __init__(self, server_pid: int | None, postmaster: int | None, loadgen_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self.postmaster = postmaster
        self.loadgen_pid = loadgen_pid

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = sum(proc_jiffies(p) for p in with_children(self.server_pid))
        self.pg0 = {pid: proc_jiffies(pid) for pid in with_children(self.postmaster)}
        self.loadgen0 = proc_jiffies(self.loadgen_pid) if self.loadgen_pid else 0
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.machine0 = machine_jiffies()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        server = sum(proc_jiffies(p) for p in with_children(self.server_pid)) - self.server0
        pg = sum(proc_jiffies(pid) - self.pg0.get(pid, 0) for pid in with_children(self.postmaster))
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, total1 = machine_jiffies()
        busy0, total0 = self.machine0
        if self.loadgen_pid:
            loadgen = (proc_jiffies(self.loadgen_pid) - self.loadgen0) / CLK_TCK / wall
        else:
            loadgen = (kids.ru_utime + kids.ru_stime - self.kids0.ru_utime - self.kids0.ru_stime) / wall
        cpu = {
            "server": server / CLK_TCK / wall if self.server_pid else float("nan"),
            "postgres": pg / CLK_TCK / wall if self.postmaster else float("nan"),
            "wrk": loadgen,
            "bench": (me.ru_utime + me.ru_stime - self.self0.ru_utime - self.self0.ru_stime) / wall,
            "machine": (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1),
        }
        # Everything else: other processes, kernel threads (WAL fsync journaling), exited processes.
        cpu["rest"] = cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine" and v == v)
        return cpu


def cpu_text(cpu: dict[str, float], keys: tuple[str, ...], *, rest: bool = False) -> str:
    """One line: the ``keys`` of a :class:`CpuMeter` reading in % of one core, the machine's busy
    share (and, with ``rest``, the rest of the machine's)."""
    ncpu = os.cpu_count() or 1
    parts = [f"{k} {cpu[k] * 100:.0f}%" if cpu[k] == cpu[k] else f"{k} n/a" for k in keys if k in cpu]
    text = f"cpu (% of one core): {', '.join(parts)}; machine busy {cpu['machine'] * 100:.0f}% of {ncpu * 100}%"
    return text + (f" (rest of the machine {cpu['rest'] * 100:.0f}%)" if rest else "")


# ------------------------------------------------------------------------------------------------
# Latencies and the API-vs-bare result lines


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (what wrk reports)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


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


# ------------------------------------------------------------------------------------------------
# py-spy profiles


def py_spy_executable() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start_profile(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` for ``seconds``, raw collapsed stacks into ``out``."""
    return subprocess.Popen(
        [py_spy_executable() or "py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate",
         "250", "--nonblocking", "--gil", "--format", "raw", "--output", str(out)],
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


def summarize_profile(path: Path, top: int = 15) -> str:
    """Self time by package, time on the stack by package, and the hottest leaf frames."""
    if not path.exists():
        return f"  (no profile written to {path})"
    by_package: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, n in read_collapsed(path):
        total += n
        by_leaf[frames[-1]] += n
        by_package[frame_package(frames[-1])] += n
        for package in {frame_package(f) for f in frames[1:]}:  # frames[0] is the entry script
            inclusive[package] += n
    if not total:
        return "  (empty profile)"
    lines = [f"  {total} samples; self time by package: "
             + ", ".join(f"{k} {v / total:.0%}" for k, v in by_package.most_common(12))]
    lines.append("  on the stack (inclusive): "
                 + ", ".join(f"{k} {v / total:.0%}" for k, v in inclusive.most_common(14)))
    lines.append("  hottest leaf frames:")
    lines += [f"    {v / total:5.1%}  {k}" for k, v in by_leaf.most_common(top)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Entry point


def run_main(main: Any, arguments: Any) -> None:
    """Exit with ``main(arguments)``'s status, run on uvloop if installed, else asyncio."""
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main(arguments)))
    sys.exit(uvloop.run(main(arguments)))
