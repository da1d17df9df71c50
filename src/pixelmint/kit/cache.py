"""Per-process caches of rows that hot paths read on every request and that change rarely (API
keys, apps with their grants and prices, the pricing table, catalog entries), with explicit
invalidation.

How a change reaches every process
==================================

- A service that changes what a cache holds calls ``invalidate(session, name)`` in its
  transaction: this process's cache ``name`` is cleared at once and again when the transaction
  commits, and ``pg_notify('pixelmint_cache', name)`` is sent in the same transaction, so
  PostgreSQL delivers it, at commit, to every process listening (``jobs/events.JobEvents``, the
  LISTEN connection each API and worker process keeps), which clears its copy
  (``clear_local(name)``).
- When that LISTEN connection is lost, notifications may be missed: every cache is cleared when
  it is lost and again once it listens again (``clear_all``).
- Each entry also expires after the cache's ``ttl`` seconds: the bound on staleness if a
  notification could not be delivered at all.

So a revoked API key is refused at once by the process that revoked it, by the others as soon as
they receive the commit's notification (milliseconds), and in any case after at most ``ttl``
seconds (``API_KEY_TTL_SECONDS`` in ``accounts/service.py``).

A read that started before an invalidation never stores its (possibly old) result after it: each
cache counts its invalidations and ``put`` drops a value read under an older count. Misses (an
unknown key) are not cached: only what exists is, so creating a row needs no invalidation.

Entries are keyed by the database they were read from (``database_key``) as well, because tests
(and tools) use several databases in one process.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

from sqlalchemy import text

from pixelmint.kit import metrics

CHANNEL = "pixelmint_cache"  # payload: the name of the cache to clear

V = TypeVar("V")

_caches: dict[str, TtlCache[Any]] = {}


class TtlCache(Generic[V]):
    """A dict with a time-to-live per entry, cleared by name (``clear_local``) from anywhere."""

    def __init__(self, name: str, ttl: float, *, max_entries: int = 100_000) -> None:
        if name in _caches:
            raise ValueError(f"a cache named {name!r} exists")
        self.name = name
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0  # invalidations so far: a read started under an older one is not stored
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._watchers: list[Callable[[], None]] = []
        _caches[name] = self

    def get(self, key: Hashable) -> V | None:
        """The value stored under ``key`` if it has not expired, else ``None``."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Hashable, value: V, generation: int) -> None:
        """Store ``value``, read when ``self.generation`` was ``generation`` (take it before the
        read): dropped if the cache was invalidated meanwhile."""
        if generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        for watcher in list(self._watchers):
            watcher()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever the cache is cleared (tests await a notification with it);
        returns the function that stops it."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback)


_database_keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def database_key(session: Any) -> str:
    """Which database a session reads (its engine's URL): entries of different databases never mix.
    Rendering a URL costs more than a cache hit, so it is kept per engine."""
    engine = session.bind.sync_engine
    key = _database_keys.get(engine)
    if key is None:
        key = _database_keys[engine] = str(engine.url)
    return key


def clear_local(name: str) -> None:
    """Clear this process's cache ``name`` (unknown names are ignored: another version's cache)."""
    cache = _caches.get(name)
    if cache is not None:
        cache.clear()


def clear_all() -> None:
    """Clear every cache of this process (the LISTEN connection was lost or is back)."""
    for cache in _caches.values():
        cache.clear()


async def invalidate(session: Any, *names: str) -> None:
    """In the caller's transaction: clear this process's caches ``names`` now and when the
    transaction commits, and notify every other process at commit (one ``pg_notify`` each)."""
    for name in names:
        clear_local(name)
        metrics.after_commit(session, partial(clear_local, name))
        await session.execute(text("SELECT pg_notify(:channel, :name)"), {"channel": CHANNEL, "name": name})
