"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text

from pixelmint.api.deps import RuntimeDep
from pixelmint.api.docs import install_docs
from pixelmint.api.errors import EdgeMiddleware, install_error_handlers
from pixelmint.api.runtime import Runtime
from pixelmint.billing.endpoints import router as billing_router
from pixelmint.catalog.endpoints import admin_router as catalog_admin_router
from pixelmint.catalog.endpoints import router as catalog_router
from pixelmint.credits.admin_endpoints import router as credits_admin_router
from pixelmint.credits.app_endpoints import admin_router as apps_admin_router
from pixelmint.credits.app_endpoints import pricing_admin_router
from pixelmint.credits.app_endpoints import router as credit_api_router
from pixelmint.credits.endpoints import router as credits_router
from pixelmint.custom_models.endpoints import router as models_router
from pixelmint.custom_models.service import MAX_UPLOAD_BYTES
from pixelmint.jobs.endpoints import jobs_router, webhooks_router
from pixelmint.jobs.endpoints import router as generate_router
from pixelmint.kit import idempotency
from pixelmint.kit.limits import BodyLimit
from pixelmint.settings import Settings
from pixelmint.storage.endpoints import files_router
from pixelmint.storage.endpoints import router as images_router


def create_app(settings: Settings, database_url: str, *, run_worker: bool = True) -> FastAPI:
    """Build the app. The runtime (pool, LISTEN connection, in-process worker) starts with the
    app's lifespan; the database must already be migrated."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.start(settings, database_url, run_worker=run_worker)
        try:
            yield
        finally:
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
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       uploads={models_router.prefix: settings.max_upload_bytes or MAX_UPLOAD_BYTES})  # 413
    for router in (
        catalog_router,
        models_router,
        generate_router,
        jobs_router,
        credits_router,
        credit_api_router,
        images_router,
        files_router,
        webhooks_router,
        catalog_admin_router,
        apps_admin_router,
        pricing_admin_router,
        credits_admin_router,
        billing_router,
    ):
        app.include_router(router)

    # Added last, so outermost: request ids, NUL in URLs, and JSON for every unexpected error.
    app.add_middleware(EdgeMiddleware)

    @app.get("/healthz", tags=["health"])
    async def healthz(runtime: RuntimeDep) -> dict[str, str]:
        async with runtime.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    return app


def create_app_from_environment() -> FastAPI:
    """App factory for multi-process serving (``pixelmint serve --processes N``): the parent
    resolves the database and passes it in ``DATABASE_URL``; ``PIXELMINT_SERVE_WORKER=0`` turns
    the in-process worker off."""
    import os

    settings = Settings()
    if not settings.database_url:
        raise RuntimeError("create_app_from_environment needs DATABASE_URL")
    return create_app(settings, settings.database_url, run_worker=os.environ.get("PIXELMINT_SERVE_WORKER", "1") == "1")
