"""Awaiting job states through the real LISTEN/NOTIFY events (no sleep loops)."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import text

from pixelmint.jobs.events import JobEvents
from pixelmint.kit.db import Database


async def wait_for_state(db: Database, hub: JobEvents, job_id: uuid.UUID, states: set[str], timeout: float = 60) -> str:
    """Wait until the job is in one of ``states``, woken by its NOTIFY events."""
    deadline = time.monotonic() + timeout
    while True:
        changed = hub.watch(job_id)
        try:
            async with db.transaction() as s:
                state = await s.scalar(text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id})
            if state in states:
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"job {job_id} is still {state}, not in {states}")
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass
        finally:
            hub.unwatch(job_id, changed)
