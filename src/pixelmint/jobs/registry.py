"""Job types: the handler that runs each and the hook its failure triggers.

Each domain that owns a job type registers it in its ``tasks.py`` (``register(registry)``); the
process assembly (``api/runtime.register_job_types``) calls those at start-up, for the API and the
worker alike. Nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.jobs.tables import Job

if TYPE_CHECKING:
    from pixelmint.jobs.tasks import Handler

# Runs in the transaction that ends a job failed or canceled (after the fenced update, before its
# credits are released): a failed training marks its custom model failed.
FailureHook = Callable[[AsyncSession, Job], Awaitable[None]]


@dataclass
class Registry:
    handlers: dict[str, Handler] = field(default_factory=dict)
    failure_hooks: dict[str, FailureHook] = field(default_factory=dict)

    def add(self, job_type: str, handler: Handler, *, on_failure: FailureHook | None = None) -> None:
        """Register ``job_type``'s handler (and failure hook); registering again replaces them."""
        self.handlers[job_type] = handler
        if on_failure is not None:
            self.failure_hooks[job_type] = on_failure


registry = Registry()  # the process's; filled by api/runtime.register_job_types
