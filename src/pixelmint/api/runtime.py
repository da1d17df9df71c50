"""The per-process runtime: database, events, storage, providers and (optionally) a worker."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

from pixelmint.billing.replenishment import ReplenishTask
from pixelmint.compat.replicate import tasks as replicate_tasks
from pixelmint.custom_models import tasks as custom_models_tasks
from pixelmint.flows import generation
from pixelmint.flows.retention import RetentionTask
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.registry import Registry
from pixelmint.jobs.registry import registry as job_types
from pixelmint.jobs.worker import Worker
from pixelmint.kit.db import Database
from pixelmint.kit.idempotency import Pruner
from pixelmint.kit.ratelimit import RateLimiter
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage
from pixelmint.storage.backend import from_settings as storage_from_settings
from pixelmint.webhooks.delivery import Deliverer


def register_job_types(registry: Registry = job_types) -> Registry:
    """Every job type's handler and failure hook, registered by the domain that owns it."""
    custom_models_tasks.register(registry)
    generation.register(registry)
    return registry


def register_job_listeners(registry: Registry, *, storage: Storage, settings: Settings) -> Registry:
    """What the layers above ``jobs`` do in the transactions where jobs start and finish."""
    replicate_tasks.register(registry, storage=storage, settings=settings)
    return registry


@dataclass
class Runtime:
    settings: Settings
    db: Database
    events: JobEvents
    storage: Storage
    providers: Providers
    rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter({}))
    worker: Worker | None = None
    _worker_task: asyncio.Task[None] | None = field(default=None, repr=False)
    retention: RetentionTask | None = None
    _retention_task: asyncio.Task[None] | None = field(default=None, repr=False)
    replenisher: ReplenishTask | None = None
    _replenish_task: asyncio.Task[None] | None = field(default=None, repr=False)
    idempotency_pruner: Pruner | None = None
    _prune_task: asyncio.Task[None] | None = field(default=None, repr=False)
    webhooks: Deliverer | None = None
    _webhooks_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def start(cls, settings: Settings, database_url: str, *, run_worker: bool) -> Runtime:
        storage = storage_from_settings(settings)  # first: a storage misconfiguration fails fast
        register_job_types()
        register_job_listeners(job_types, storage=storage, settings=settings)
        db = Database.connect(database_url, pool_size=settings.db_pool_size)
        events = JobEvents(database_url)
        await events.start()
        runtime = cls(
            settings=settings,
            db=db,
            events=events,
            storage=storage,
            providers=Providers.from_settings(settings),
            rate_limiter=RateLimiter.from_settings(settings),
        )
        if settings.idempotency_prune_interval_seconds > 0:  # Idempotency-Key rows: kit/idempotency.py
            runtime.idempotency_pruner = Pruner(
                db, retention=dt.timedelta(hours=settings.idempotency_retention_hours),
                interval_seconds=settings.idempotency_prune_interval_seconds,
            )
            runtime._prune_task = asyncio.create_task(runtime.idempotency_pruner.run())
        if run_worker:
            runtime.worker = Worker(
                db=db, events=events, settings=settings, providers=runtime.providers, storage=runtime.storage,
                handlers=job_types.handlers,
            )
            runtime._worker_task = asyncio.create_task(runtime.worker.run())
            if settings.retention_interval_seconds > 0:  # expired images: flows/retention.py
                runtime.retention = RetentionTask(
                    db, storage, interval_seconds=settings.retention_interval_seconds,
                    batch_size=settings.retention_batch_size,
                )
                runtime._retention_task = asyncio.create_task(runtime.retention.run())
            if settings.replenish_interval_seconds > 0:  # monthly allocations: billing/replenishment.py
                runtime.replenisher = ReplenishTask(
                    db, interval_seconds=settings.replenish_interval_seconds, batch_size=settings.replenish_batch_size
                )
                runtime._replenish_task = asyncio.create_task(runtime.replenisher.run())
            # Outbound webhooks: webhooks/delivery.py (its own queue, not the jobs table).
            runtime.webhooks = Deliverer(db, settings, database_url=database_url)
            runtime._webhooks_task = asyncio.create_task(runtime.webhooks.run())
        return runtime

    async def stop(self) -> None:
        if self.webhooks is not None and self._webhooks_task is not None:
            self.webhooks.stop()
            await asyncio.gather(self._webhooks_task, return_exceptions=True)
        if self.worker is not None and self._worker_task is not None:
            self.worker.stop()
            await asyncio.gather(self._worker_task, return_exceptions=True)
        if self.replenisher is not None and self._replenish_task is not None:
            self.replenisher.stop()
            await asyncio.gather(self._replenish_task, return_exceptions=True)
        if self.retention is not None and self._retention_task is not None:
            self.retention.stop()
            await asyncio.gather(self._retention_task, return_exceptions=True)
        if self.idempotency_pruner is not None and self._prune_task is not None:
            self.idempotency_pruner.stop()
            await asyncio.gather(self._prune_task, return_exceptions=True)
        await self.events.stop()
        await self.db.dispose()
