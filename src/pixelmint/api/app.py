"""The FastAPI application factory: assembles the routers, the middleware and the error handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pixelmint.api import health
from pixelmint.api import metrics as prometheus
from pixelmint.api.docs import install_docs
from pixelmint.api.errors import EdgeMiddleware, install_error_handlers
from pixelmint.api.runtime import Runtime
from pixelmint.billing import admin_endpoints as billing_admin
from pixelmint.billing import endpoints as billing
from pixelmint.catalog import endpoints as catalog
from pixelmint.compat.openai_images import endpoints as openai_images
from pixelmint.compat.replicate import endpoints as replicate
from pixelmint.credits import admin_endpoints as credits_admin
from pixelmint.credits import app_endpoints as credit_api
from pixelmint.credits import endpoints as credits
from pixelmint.custom_models import endpoints as custom_models
from pixelmint.custom_models.service import MAX_UPLOAD_BYTES
from pixelmint.flows import endpoints as flows
from pixelmint.jobs import endpoints as jobs
from pixelmint.kit import idempotency
from pixelmint.kit.limits import BodyLimit
from pixelmint.kit.logging import configure_logging
from pixelmint.settings import Settings
from pixelmint.storage import endpoints as storage
from pixelmint.web import app as web
from pixelmint.webhooks import endpoints as webhooks


def create_app(settings: Settings, database_url: str, *, run_worker: bool = True) -> FastAPI:
    """Build the app. The runtime (pool, LISTEN connection, in-process worker) starts with the
    app's lifespan; the database must already be migrated."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.start(settings, database_url, run_worker=run_worker)
        # What start-up made lives as long as the app: out of the collector's way, so that
        # collections under load only look at what requests make (``gc.freeze``); given back at
        # the end (several apps in one process: tests).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await app.state.runtime.stop()

    app = FastAPI(
        title="Pixelmint",
        version="0.1.0",
        description="Self-hostable, credit-metered AI image generation. Authenticate with "
        "`Authorization: Bearer <apiKey>`. Errors are JSON (the `Error` schema): "
        "`{\"error\": <stable code>, \"message\": <text>, \"field\"?, \"details\"?}`; every answer carries an "
        "`X-Request-ID` header (a sane one sent with the request, else a new one).",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, from local files
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    idempotency.install(app)  # Idempotency-Key: replays and answers stored after the commit
    web.install(app, settings)  # the dashboard's pages, /static, CSRF (inside the body limit)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       uploads=dict.fromkeys((custom_models.router.prefix, "/app/models"),  # /app/models: web
                                             settings.max_upload_bytes or MAX_UPLOAD_BYTES))  # 413
    for router in (
        catalog.router,
        custom_models.router,
        flows.generate_router,
        jobs.router,
        jobs.jobs_router,
        credits.router,
        credits.apps_router,
        credit_api.router,
        flows.estimate_router,
        storage.router,
        storage.files_router,
        jobs.webhooks_router,
        webhooks.router,
        catalog.admin_router,
        credits_admin.admin_router,
        credits_admin.pricing_admin_router,
        billing_admin.router,
        billing.router,
        health.router,
        openai_images.router,  # /openai/v1: OpenAI's Images API, errors in its envelope
        replicate.router,  # /replicate/v1: Replicate's API (its own errors; not in /openapi.json)
        prometheus.router,
    ):
        app.include_router(router)

    # Added last, so outermost: request ids, NUL in URLs, and JSON for every unexpected error;
    # around it, the HTTP metrics (which count the statuses the edge answers too).
    app.add_middleware(EdgeMiddleware)
    app.add_middleware(prometheus.HttpMetrics)

    return app


def create_app_from_environment() -> FastAPI:
    """App factory for multi-process serving (``pixelmint serve --processes N``): the parent
    resolves the database and passes it in ``DATABASE_URL``; ``PIXELMINT_SERVE_WORKER=0`` turns
    the in-process worker off."""
    import os

    settings = Settings()
    configure_logging(settings.log_level, json=settings.json_logs)  # a new process: its parent's setup is not inherited
    if not settings.database_url:
        raise RuntimeError("create_app_from_environment needs DATABASE_URL")
    return create_app(settings, settings.database_url, run_worker=os.environ.get("PIXELMINT_SERVE_WORKER", "1") == "1")
