"""Job types: the handler that runs each and the hook its failure triggers; and the listeners
told when any job starts or finishes.

Each domain that owns a job type registers it in its ``tasks.py`` (``register(registry)``); the
process assembly (``api/runtime.register_job_types``) calls those at start-up, for the API and the
worker alike. A layer above ``jobs`` that reacts to jobs' starts and finishes in their own
transaction (the Replicate-compatible API's per-prediction webhooks) registers a listener there
too (``listen``). Nothing registers itself on import.
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

# Runs in the transaction that starts a job (its first claim: state running, attempt 1) and in the
# one that finishes it (succeeded, after its outcome's ``apply``; failed; canceled), after the job
# row changed and its credits settled: ``job`` is the row as it is now. It must be cheap for jobs
# it does not care about (it runs for every job), and what it raises rolls back the transaction.
StateListener = Callable[[AsyncSession, Job], Awaitable[None]]


@dataclass
class Registry:
    handlers: dict[str, Handler] = field(default_factory=dict)
    failure_hooks: dict[str, FailureHook] = field(default_factory=dict)
    listeners: dict[str, StateListener] = field(default_factory=dict)

    def add(self, job_type: str, handler: Handler, *, on_failure: FailureHook | None = None) -> None:
        """Register ``job_type``'s handler (and failure hook); registering again replaces them."""
        self.handlers[job_type] = handler
        if on_failure is not None:
            self.failure_hooks[job_type] = on_failure

    def listen(self, name: str, listener: StateListener) -> None:
        """Tell ``listener`` of every job's start and finish; registering ``name`` again replaces
        its listener (a process that starts its runtime twice keeps one)."""
        self.listeners[name] = listener


registry = Registry()  # the process's; filled by api/runtime.register_job_types and register_job_listeners
