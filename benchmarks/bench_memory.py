#!/usr/bin/env python
"""Resident memory over a long run: the API process under the generate load and a worker process
draining what it enqueues, both sampled from /proc/<pid>/status (VmRSS).

Run (``--minutes`` of load, 10 by default, plus about 20 s of set-up)::

    .venv/bin/python benchmarks/bench_memory.py --minutes 1          # quick
    .venv/bin/python benchmarks/bench_memory.py                      # 10 minutes
    DATABASE_URL=postgresql://user:pw@host/db .venv/bin/python benchmarks/bench_memory.py

Scenario: bench_generate's *spread* load (``--concurrency`` clients, client i charging team
i % 32 through ``POST /api/v1/generate``, rate limits and queue cap off) against one ``pixelmint
serve --no-worker`` process, while one real ``Worker`` process (``queue_harness.py``'s, bench_drain's
no-op ``image_generation`` handler: each job is claimed, its hold captured and the job finished)
drains the jobs as they come. Printed per process: start, peak and end RSS and the least-squares
slope of the second half in MB per minute (flat: near 0). How: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from bench_generate import BODY, create_keys
from harness import ApiBench, CpuMeter, RssSampler, api_load, run_main, use_wrk, warn_if_machine_busy
from pixelmint.kit.db import asyncpg_connect_kwargs

QUEUE_HARNESS = Path(__file__).resolve().parent / "queue_harness.py"


async def start_worker(url: str, workdir: Path, concurrency: int) -> asyncio.subprocess.Process:
    """One worker process (``queue_harness.py`` as a script), running once it said "ready"."""
    read_fd, write_fd = os.pipe()
    with open(workdir / "worker.log", "wb") as log:
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(QUEUE_HARNESS), "--url", url, "--worker-id", "memory", "--concurrency",
            str(concurrency), "--log-level", "warning", "--lease-seconds", "30", "--worker-loop", "asyncio",
            "--job-type", "image_generation", "--data-dir", str(workdir / "data"), "--ready-fd", str(write_fd),
            stdin=asyncio.subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,))
    os.close(write_fd)
    with open(read_fd, "rb") as pipe:
        line = await asyncio.wait_for(asyncio.to_thread(pipe.readline), 120)
    if line.strip() != b"ready":
        raise RuntimeError(f"the worker did not start:\n{(workdir / 'worker.log').read_text()[-3000:]}")
    child.stdin.write(b"go\n")  # type: ignore[union-attr]
    await child.stdin.drain()  # type: ignore[union-attr]
    return child


async def stop_worker(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), 30)
        except TimeoutError:
            child.kill()
            await child.wait()


async def main(args: argparse.Namespace) -> int:
    wrk = use_wrk(args.loadgen, None)
    async with ApiBench("/tmp/pmm") as bench:
        keys = (await create_keys(bench.url, 33))[1:]  # bench_generate's spread teams
        await bench.serve(1, {"PIXELMINT_RATE_LIMIT_GENERATE": "", "PIXELMINT_RATE_LIMIT_GENERATE_TEAM": "",
                              "PIXELMINT_MAX_QUEUED_JOBS_PER_TEAM": "0"})
        assert bench.proc is not None
        await bench.pg.describe()  # type: ignore[union-attr]
        worker = await start_worker(bench.url, bench.workdir, args.worker_concurrency)
        try:
            print(f"API pid {bench.proc.pid} under {args.concurrency} generate clients "
                  f"({'wrk' if wrk else 'httpx, in this process'}), worker pid {worker.pid} (concurrency "
                  f"{args.worker_concurrency}) draining; {args.minutes:g} min, RSS every {args.interval:g} s", flush=True)
            await warn_if_machine_busy()
            sampler = RssSampler({"API server": bench.proc.pid, "worker": worker.pid}, args.interval)
            sampler.start()
            await api_load(wrk, bench.base_url, "/api/v1/generate", 202, BODY, keys, workdir=bench.workdir,
                           cpu_keys=("server", "workers", "postgres"),
                           meter=CpuMeter(bench.proc.pid, bench.postmaster, workers=[worker.pid]),
                           clients=args.concurrency, seconds=int(args.minutes * 60), warmup=0)
            await sampler.stop()
        finally:
            await stop_worker(worker)
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(bench.url))
        try:
            states = dict(await conn.fetch("SELECT state, count(*) FROM jobs GROUP BY state"))
        finally:
            await conn.close()
    print(f"jobs: {', '.join(f'{n:,} {state}' for state, n in sorted(states.items()))}")
    print(f"\n{'process':<12}{'samples':>8}{'start MB':>10}{'peak MB':>9}{'end MB':>8}{'2nd-half slope MB/min':>23}")
    for name in sampler.samples:
        start, peak, end, slope = sampler.report(name)
        print(f"{name:<12}{len(sampler.samples[name]):>8}{start:>10.1f}{peak:>9.1f}{end:>8.1f}{slope:>+23.2f}")
    if args.samples:
        Path(args.samples).write_text("process,seconds,rss_mb\n" + "".join(
            f"{name},{t:.1f},{mb:.1f}\n" for name, series in sampler.samples.items() for t, mb in series))
        print(f"samples written to {args.samples}")
    return 0 if "failed" not in states else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="minutes of load (default 10)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between RSS samples (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="generate clients (default 32)")
    parser.add_argument("--worker-concurrency", type=int, default=32, help="worker slots (default 32)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--samples", metavar="CSV", help="also write every sample (process, seconds, MB) here")
    return parser.parse_args()


if __name__ == "__main__":
    run_main(main, parse_args())
