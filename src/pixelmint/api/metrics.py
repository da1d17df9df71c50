"""``GET /metrics`` (Prometheus text format) and the middleware that counts HTTP requests.

The metrics are defined in ``kit/metrics.py``. ``/metrics`` takes ``Authorization: Bearer
<PIXELMINT_METRICS_TOKEN>`` when that setting is set (401 ``invalid_metrics_token`` otherwise) and
is open while it is unset. It shows, besides the counters and histograms, the queue as PostgreSQL
has it when scraped (``jobs/queue.queue_depths``): ``pixelmint_queue_depth{priority}`` and
``pixelmint_queue_oldest_ready_age_seconds{priority}``. In multi-process mode
(``PROMETHEUS_MULTIPROC_DIR``) the counters of every process add up; the queue gauges come from
the database, so whichever process answers shows the same.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable

import structlog
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelmint.jobs.queue import QueueDepth, queue_depths
from pixelmint.kit import metrics
from pixelmint.kit.errors import Unauthorized
from pixelmint.kit.http import BearerDep, DatabaseDep, SettingsDep

log = structlog.get_logger(__name__)

router = APIRouter(tags=["metrics"])


class InvalidMetricsToken(Unauthorized):
    """401: PIXELMINT_METRICS_TOKEN is set and the request did not send it as its Bearer token."""

    code = "invalid_metrics_token"
    headers = {"WWW-Authenticate": "Bearer"}


class _Scrape:
    """One scrape: the registry's metrics, then the queue gauges read for it."""

    def __init__(self, registry: Collector, depths: list[QueueDepth] | None) -> None:
        self.registry = registry
        self.depths = depths

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()
        if self.depths is None:
            return
        depth = GaugeMetricFamily("pixelmint_queue_depth", "Queued jobs (including retries not due yet), by "
                                  "priority, read from the database at scrape time.", labels=["priority"])
        oldest = GaugeMetricFamily("pixelmint_queue_oldest_ready_age_seconds", "How long the oldest job ready to "
                                   "run has waited, by priority (0: none is ready).", labels=["priority"])
        for row in self.depths:
            depth.add_metric([str(row.priority)], row.depth)
            oldest.add_metric([str(row.priority)], row.oldest_ready_age)
        yield depth
        yield oldest


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(settings: SettingsDep, db: DatabaseDep, credentials: BearerDep) -> Response:
    token = settings.metrics_token
    if token is not None and (
        credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode())
    ):
        raise InvalidMetricsToken("Send Authorization: Bearer <PIXELMINT_METRICS_TOKEN>.")
    depths: list[QueueDepth] | None
    try:
        async with db.transaction() as session:
            depths = await queue_depths(session)
    except Exception as exc:  # noqa: BLE001 - the process's metrics are worth having when the database is down
        log.warning("metrics_queue_unavailable", error=f"{type(exc).__name__}: {exc}")
        depths = None
    body = generate_latest(_Scrape(metrics.collector_registry(), depths))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that served the request (``/api/v1/jobs/{job_id}``), with the
    paths of the mounts it is under; ``unmatched`` when no route matched. ``root_path``: the
    request's root path before routing (routing extends it by each mount's path)."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    prefix = scope.get("root_path", "")[len(root_path):]
    if isinstance(route, Mount):  # a mounted app that is not a router (static files)
        return f"{prefix}/{{path}}"
    return prefix + getattr(route, "path_format", "")


class HttpMetrics:
    """Pure ASGI middleware: counts every HTTP request by method, route template and status, and
    times it (arrival → the answer's last byte). A request whose answer never started counts as
    500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_template(scope, root_path)
            metrics.http_requests.labels(method=method, route=route, status=str(status)).inc()
            metrics.http_request_duration.labels(method=method, route=route).observe(time.perf_counter() - started)
