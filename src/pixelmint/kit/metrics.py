"""Prometheus metrics: every metric the service exports, defined here so any domain may count.

``GET /metrics`` (``api/metrics.py``) renders them in the Prometheus text format. Names follow
Prometheus conventions (https://prometheus.io/docs/practices/naming/): counters end in
``_total``, durations are histograms in ``_seconds``, credits are counted in credits. Every label
has a bounded set of values (route templates, never raw paths; job types, states, providers,
error codes; credit operations, which are the job types and the operations admins price for apps).

Counting a change that a transaction makes: ``after_commit(session, action)`` runs ``action``
when the session's transaction commits and drops it when it rolls back, so the counters say what
really happened (the credit counters of ``credits/ledger.py`` and the job counters of
``jobs/queue.py`` count this way). A rollback to a savepoint drops the actions added inside it
and keeps the others; releasing a savepoint runs nothing yet (the transaction may still roll
back).

Several processes (``pixelmint serve --processes N``, ``pixelmint worker``) add up when
``PROMETHEUS_MULTIPROC_DIR`` names a directory they share, set before they start (and emptied
before the first one starts): prometheus_client then writes each process's values to files there,
and the endpoint reads them all (``multiprocess.MultiProcessCollector``). Without it each process
counts in memory, in ``REGISTRY``. See https://prometheus.github.io/client_python/multiprocess/.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client import multiprocess as _multiprocess
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

# The metrics of this process (single-process mode), with the process, platform and GC
# collectors of prometheus_client's default registry (they do not work across processes).
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)


def multiprocess_dir() -> str | None:
    """The directory of multi-process mode (``PROMETHEUS_MULTIPROC_DIR``), or ``None``."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def collector_registry() -> CollectorRegistry:
    """What ``/metrics`` shows: in multi-process mode a new registry reading every process's files
    (built per scrape, as prometheus_client documents), else ``REGISTRY``."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=path)
    return registry


_SHORT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LONG = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)

# HTTP (api/metrics.HttpMetrics). route: the route's template ("/api/v1/jobs/{job_id}"), or
# "unmatched" for a path no route serves.
http_requests = Counter(
    "pixelmint_http_requests_total", "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"], registry=REGISTRY,
)
http_request_duration = Histogram(
    "pixelmint_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "route"], buckets=_SHORT, registry=REGISTRY,
)

# Jobs (jobs/queue.py), counted when their transaction commits. state: succeeded | failed |
# canceled (expired comes later, by image retention, and is not a finish).
jobs_submitted = Counter(
    "pixelmint_jobs_submitted_total", "Jobs enqueued, by type and provider.", ["type", "provider"], registry=REGISTRY,
)
jobs_finished = Counter(
    "pixelmint_jobs_finished_total", "Jobs that reached a final state, by type, state and provider.",
    ["type", "state", "provider"], registry=REGISTRY,
)
job_retries = Counter(
    "pixelmint_job_retries_total", "Failed attempts put back in the queue for another try, by type and provider.",
    ["type", "provider"], registry=REGISTRY,
)
job_run_seconds = Histogram(
    "pixelmint_job_run_seconds", "Run time of a job's attempt (claimed → finished, retried or handed to a "
    "provider's webhook), by type and provider.", ["type", "provider"], buckets=_LONG, registry=REGISTRY,
)
job_queue_wait_seconds = Histogram(
    "pixelmint_job_queue_wait_seconds", "Time a job waited in the queue (ready → claimed), by type.",
    ["type"], buckets=_LONG, registry=REGISTRY,
)

# Credits (credits/ledger.py), in credits, counted when their transaction commits. operation:
# the ledger row's operation (a job type, or an app's priced operation). A capture of less than
# the hold counts the rest as released: reserved = captured + released + still held.
credits_reserved = Counter(
    "pixelmint_credits_reserved_total", "Credits put on hold, by operation.", ["operation"], registry=REGISTRY,
)
credits_captured = Counter(
    "pixelmint_credits_captured_total", "Held credits charged, by operation.", ["operation"], registry=REGISTRY,
)
credits_released = Counter(
    "pixelmint_credits_released_total", "Held credits given back, by operation.", ["operation"], registry=REGISTRY,
)
credits_consumed = Counter(
    "pixelmint_credits_consumed_total", "Credits spent at once (the credit API's consume), by operation.",
    ["operation"], registry=REGISTRY,
)

# Providers: a failed call to an image provider, by the provider's name and the stable
# ProviderError code (providers/base.py). Counted by jobs/worker.py for every attempt that a
# provider error ends.
provider_errors = Counter(
    "pixelmint_provider_errors_total", "Provider failures, by provider and error code.", ["provider", "code"],
    registry=REGISTRY,
)

# Outbound webhooks (webhooks/): one per delivery attempt. outcome: succeeded (2xx) | failed
# (anything else: non-2xx, redirect, timeout, connection error, refused by the SSRF guard) |
# disabled (the endpoint answered 410, or failed for too long, and was switched off).
webhook_deliveries = Counter(
    "pixelmint_webhook_deliveries_total", "Outbound webhook delivery attempts, by outcome.", ["outcome"],
    registry=REGISTRY,
)


# --------------------------------------------------------------------------------------------
# Counting at commit

_PENDING = "pixelmint_metrics_after_commit"


def after_commit(session: Any, action: Callable[[], None]) -> None:
    """Run ``action`` (a counter increment, a histogram observation) when ``session``'s
    transaction commits; forget it if the transaction rolls back, or if the savepoint it was
    added in does (``begin_nested``: the rest of the transaction's actions stay). ``session``: an
    ``AsyncSession`` or a ``Session``."""
    sync: Session = getattr(session, "sync_session", session)
    added_in = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault(_PENDING, []).append((added_in, action))


@event.listens_for(Session, "after_commit")
def _run_pending(session: Session) -> None:
    if session.get_nested_transaction() is not None:  # a savepoint was released (SQLAlchemy fires this too)
        return
    for _added_in, action in session.info.pop(_PENDING, ()):
        action()


def _inside(transaction: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_transaction_end")
def _forget_pending(session: Session, transaction: SessionTransaction) -> None:
    """The session's transaction is over however it ended (a ``close()`` fires neither commit nor
    rollback events): nothing it left pending may run in the session's next one."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous_transaction: SessionTransaction) -> None:
    """A savepoint rolled back (SQLAlchemy fires this for every rollback, with the transaction
    that ended; the whole transaction's is ``_forget_pending``'s): drop the actions added inside it."""
    pending = session.info.get(_PENDING)
    if pending and previous_transaction.nested:
        session.info[_PENDING] = [(t, a) for t, a in pending if not _inside(t, previous_transaction)]
