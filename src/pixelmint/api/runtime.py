"""The per-process runtime: database, events, storage, providers and (optionally) a worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pixelmint.credits.pricing import DEFAULT_PRICING, Pricing
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.worker import Worker
from pixelmint.kit.db import Database
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage
from pixelmint.storage.backend import from_settings as storage_from_settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    events: JobEvents
    storage: Storage
    providers: Providers
    pricing: Pricing = DEFAULT_PRICING
    worker: Worker | None = None
    _worker_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def start(cls, settings: Settings, database_url: str, *, run_worker: bool) -> Runtime:
        db = Database.connect(database_url, pool_size=settings.db_pool_size)
        events = JobEvents(database_url)
        await events.start()
        runtime = cls(
            settings=settings,
            db=db,
            events=events,
            storage=storage_from_settings(settings),
            providers=Providers.from_settings(settings),
        )
        if run_worker:
            runtime.worker = Worker(
                db=db, events=events, settings=settings, providers=runtime.providers, storage=runtime.storage
            )
            runtime._worker_task = asyncio.create_task(runtime.worker.run())
        return runtime

    async def stop(self) -> None:
        if self.worker is not None and self._worker_task is not None:
            self.worker.stop()
            await asyncio.gather(self._worker_task, return_exceptions=True)
        await self.events.stop()
        await self.db.dispose()
