"""Group commit on a hot row (issue 12, "a hot balance beats the naive transaction"): a
``Coalescer`` keeps at most one statement per key (a team's balance) in flight in this process;
what arrives for the key meanwhile waits and goes out together as the next batch, in one
statement of the caller's making (one lock turn, one WAL flush for all).

As TigerBeetle's client batches (``../shared/reference/hot-rows-and-scale.md`` A3): an item that
finds nothing in flight runs AT ONCE, alone, on the caller's own path (no timer, no task, nothing
added to its latency); the items that arrive meanwhile queue, and when the statement in flight
returns, all that queued (up to ``limit``) go out as one batch, in a task of its own on a pool
connection of its own (a caller that stops waiting does not take the batch down with it). Each
caller gets its own result. An exception of the batch function reaches every caller of the batch
(the batch function turns refusals it can attribute into per-item results itself).

Per process and per event loop; several processes each coalesce their own requests (the row lock
orders their batches).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from pixelmint.kit.db import driver_connection

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Stats:
    """Counters of one coalescer (tests and benchmarks): items run alone, batches run and the
    items in them."""

    alone: int = 0
    batches: int = 0
    batched: int = 0


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    engine: AsyncEngine
    future: asyncio.Future[R]


@dataclass
class _Key(Generic[T, R]):
    waiting: list[_Waiting[T, R]] = field(default_factory=list)


class Coalescer(Generic[K, T, R]):
    """``submit(key, item, engine, alone)``: ``alone()`` at once when nothing is in flight for
    ``key``, else ``batch(connection, key, items)`` with the items that queued meanwhile, on a
    connection of ``engine``'s pool outside any transaction (the asyncpg connection); it returns one
    result per item, in order."""

    def __init__(self, batch: Callable[[Any, K, list[T]], Awaitable[list[R]]], *, limit: int = 512) -> None:
        self._batch = batch
        self._limit = limit
        self.stats = Stats()
        self._in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, _Key[T, R]]] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task[None]] = set()  # running batches (referenced, so not collected)

    def _keys(self) -> dict[K, _Key[T, R]]:
        loop = asyncio.get_running_loop()
        keys = self._in_flight.get(loop)
        if keys is None:
            keys = self._in_flight[loop] = {}
        return keys

    def in_flight(self, key: K) -> bool:
        """Whether a statement for ``key`` is running in this process (and event loop)."""
        return key in self._keys()

    async def submit(self, key: K, item: T, engine: AsyncEngine, alone: Callable[[], Awaitable[R]]) -> R:
        keys = self._keys()
        entry = keys.get(key)
        if entry is not None:  # one is in flight: join the next batch
            waiting: _Waiting[T, R] = _Waiting(item, engine, asyncio.get_running_loop().create_future())
            entry.waiting.append(waiting)
            return await waiting.future
        keys[key] = _Key()
        self.stats.alone += 1
        try:
            return await alone()
        finally:
            self._next(keys, key)

    def _next(self, keys: dict[K, _Key[T, R]], key: K) -> None:
        """The statement in flight for ``key`` has returned: send what queued, or mark it idle."""
        entry = keys[key]
        batch = [w for w in entry.waiting[:self._limit] if not w.future.done()]  # done: its caller gave up
        entry.waiting = entry.waiting[self._limit:]
        if not batch and not entry.waiting:
            del keys[key]
            return
        task = asyncio.get_running_loop().create_task(self._run(keys, key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, keys: dict[K, _Key[T, R]], key: K, batch: list[_Waiting[T, R]]) -> None:
        try:
            if batch:
                self.stats.batches += 1
                self.stats.batched += len(batch)
                async with batch[0].engine.connect() as connection:
                    results = await self._batch(await driver_connection(connection), key, [w.item for w in batch])
                for waiting, result in zip(batch, results, strict=True):
                    if not waiting.future.done():
                        waiting.future.set_result(result)
        except Exception as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
        except BaseException:  # cancelled (the loop is closing): so are its callers
            for waiting in batch:
                waiting.future.cancel()
            raise
        finally:
            self._next(keys, key)
