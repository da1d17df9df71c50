"""Rate limits per team and per key, with the ``limits`` library (sliding window counter: the
current fixed window's count plus the previous window's, weighted by how much of it the sliding
window still covers — Cloudflare's approximation of a moving window, two counters per key instead
of one timestamp per request).

A *scope* is a group of endpoints sharing limits (``generate``: ``POST /generate`` and custom model
create/refine; ``consume``: the credit API's spending endpoints; ``webhooks``: creating webhook endpoints
and resending or replaying deliveries; ``login``: dashboard sign-ins, per client address as the "key"
and per email as the "team"). Each scope has two limits in
``limits``' string syntax (``"60/minute"``, ``"10/second;500/hour"``; empty = none), read from the
settings ``rate_limit_<scope>`` (per API key, or per app service key) and
``rate_limit_<scope>_team`` (per team, all its keys together). A request over either is 429
``rate_limited`` with ``Retry-After`` (whole seconds until the window has room again).

Counters live in memory (per process) by default, or in Redis when ``REDIS_URL`` is set, shared by
all processes. If Redis cannot be reached the request is let through and a warning logged: an
outage of the limiter must not take generation down with it.

Use it as a dependency (``accounts/auth.rate_limit("generate")``, ``kit/http.rate_limit``), or
call ``RateLimiter.hit``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from pixelmint.kit.errors import TooManyRequests

log = structlog.get_logger(__name__)

KEY_PREFIX = "pixelmint"


class RateLimited(TooManyRequests):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, retryAfter=retry_after, **extra)
        self.headers = {"Retry-After": str(retry_after)}


@dataclass(frozen=True)
class ScopeLimits:
    per_key: tuple[RateLimitItem, ...]
    per_team: tuple[RateLimitItem, ...]


def parse_limits(value: str | None) -> tuple[RateLimitItem, ...]:
    """``"60/minute"`` or ``"10/second;500/hour"`` → limits; empty or None → no limit."""
    return tuple(parse_many(value)) if value and value.strip() else ()


def storage_for(redis_url: str | None) -> Storage:
    """Memory storage, or Redis storage for ``redis://``/``rediss://``/``unix://`` URLs."""
    if not redis_url:
        return MemoryStorage()
    url = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    if url.startswith("async+unix://"):
        url = "async+redis+unix://" + url.removeprefix("async+unix://")
    storage = storage_from_string(url, key_prefix=KEY_PREFIX, wrap_exceptions=True)
    assert isinstance(storage, Storage)
    return storage


class RateLimiter:
    """The limits of every scope over one storage."""

    def __init__(self, scopes: dict[str, ScopeLimits], storage: Storage | None = None) -> None:
        self.scopes = scopes
        self.storage = storage or MemoryStorage()
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    @classmethod
    def from_settings(cls, settings: Any, scopes: tuple[str, ...] = ("generate", "consume", "webhooks", "login")) -> RateLimiter:
        return cls(
            {
                scope: ScopeLimits(
                    per_key=parse_limits(getattr(settings, f"rate_limit_{scope}")),
                    per_team=parse_limits(getattr(settings, f"rate_limit_{scope}_team")),
                )
                for scope in scopes
            },
            storage_for(settings.redis_url),
        )

    async def hit(self, scope: str, *, team: object | None, key: object | None) -> None:
        """Count one request of ``scope`` against the key's and the team's limits (either may be None).

        Raises ``RateLimited`` when a limit is exhausted. Limits are checked in turn (the key's,
        then the team's), each counting the request when it has room.
        """
        limits = self.scopes.get(scope)
        if limits is None:
            raise KeyError(f"no rate-limit scope {scope!r}")
        checks = [(item, "key", key) for item in limits.per_key] + [(item, "team", team) for item in limits.per_team]
        for item, kind, who in checks:
            if who is None:
                continue
            identifiers = (scope, kind, str(who))
            try:
                allowed = await self.strategy.hit(item, *identifiers)
                if allowed:
                    continue
                window = await self.strategy.get_window_stats(item, *identifiers)
            except Exception:  # the storage is down: let the request through
                log.warning("rate_limit_storage_failed", scope=scope, exc_info=True)
                return
            retry_after = max(1, math.ceil(window.reset_time - time.time()))
            per = "API key" if kind == "key" else "team"
            raise RateLimited(
                f"Too many {scope} requests for this {per}: the limit is {item}. Retry in {retry_after} s.",
                retry_after=retry_after, limit=str(item), scope=scope,
            )
