"""Webhook tests: receivers on loopback addresses (so private URLs are allowed unless a test says
otherwise) and a retry schedule of fractions of a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from pixelmint.kit.db import Database
from pixelmint.settings import Settings
from pixelmint.webhooks.delivery import Deliverer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.allow_private_urls = True
    settings.webhook_retry_schedule_seconds = [0, 0.2, 0.2, 0.2]
    settings.webhook_poll_interval_seconds = 1.0
    settings.webhook_timeout_seconds = 5
    return settings


@asynccontextmanager
async def delivering(db: Database, settings: Settings) -> AsyncIterator[Deliverer]:
    """A delivery loop of its own (for tests on the ``api`` fixture, which runs none)."""
    deliverer = Deliverer(db, settings)
    task = asyncio.create_task(deliverer.run())
    try:
        yield deliverer
    finally:
        deliverer.stop()
        await asyncio.wait_for(task, 30)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """Re-run ``check`` until it returns something truthy (recording an attempt follows its HTTP
    answer by a moment, and has no event to await); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
