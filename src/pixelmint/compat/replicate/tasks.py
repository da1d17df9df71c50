"""What the Replicate-compatible API does when jobs change: a prediction's (or training's) own
webhook (``webhook``, ``webhook_events_filter``) is queued in the transaction where its job starts
or finishes, through the job registry's listeners (``jobs/registry.py``: ``jobs`` sits below this
package and cannot call it), registered by the process assembly (``api/runtime.py``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.compat.replicate import service
from pixelmint.jobs.registry import Registry
from pixelmint.jobs.tables import Job
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage


def register(registry: Registry, *, storage: Storage, settings: Settings) -> None:
    """Listen to every job's start and finish; ``storage`` and ``settings`` sign the payload's
    image URLs (as ``GET /v1/predictions/{id}`` signs them)."""

    async def deliver_webhook(session: AsyncSession, job: Job) -> None:
        await service.queue_webhook(session, job, storage=storage, settings=settings)

    registry.listen("replicate_webhooks", deliver_webhook)
