"""An API client on settings overridden per test (rate limits, queue caps, timeouts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from pixelmint.api.app import create_app
from pixelmint.settings import Settings


@pytest.fixture
def client_with(settings: Settings, database_url: str) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """``async with client_with(rate_limit_generate="2/minute") as api:`` — the API (no worker) on
    the test settings with those fields replaced."""

    @asynccontextmanager
    async def open_client(*, run_worker: bool = False, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.model_copy(update=overrides), database_url, run_worker=run_worker)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client

    return open_client
