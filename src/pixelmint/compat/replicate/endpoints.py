"""``/replicate/v1/...``: Replicate's HTTP API (models, versions, predictions, trainings), so that
the official ``replicate`` SDK works with ``base_url="http://host/replicate"``.

Paths, bodies and answers are Replicate's (``protocols.md`` §2; what the SDK 1.0.7 sends and
checks: ``dashboard-and-compat.md`` §D.2); errors are problem details (``errors.py``). Callers
authenticate with a Pixelmint API key (``Authorization: Bearer``, as the SDK sends its token).
The routes stay out of ``/openapi.json``: it documents the native API and its error body;
Replicate's own reference documents this one.

``Idempotency-Key`` is not taken here: Replicate has no such header, and stored answers replay in
the native error shape. The SDK never retries a POST (``replicate/client.py`` ``RetryTransport``).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from starlette.routing import Match

from pixelmint.accounts.auth import PrincipalDep, rate_limit
from pixelmint.catalog.errors import ModelNotFound
from pixelmint.compat import names
from pixelmint.compat.replicate import service
from pixelmint.compat.replicate.errors import ReplicateRoute, problem, render
from pixelmint.compat.replicate.schemas import (
    Model,
    ModelPredictionRequest,
    Page,
    Prediction,
    PredictionRequest,
    Training,
    TrainingRequest,
    Version,
    WebhookSigningSecret,
)
from pixelmint.credits.pricing import current_pricing
from pixelmint.jobs import service as jobs
from pixelmint.jobs.deps import JobEventsDep, ProvidersDep
from pixelmint.jobs.errors import JobFinished
from pixelmint.jobs.events import wait_for_job
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.tables import Job
from pixelmint.kit.errors import NotFound
from pixelmint.kit.http import DatabaseDep, SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.storage.deps import StorageDep, UrlSignerDep
from pixelmint.storage.schemas import UrlSigner
from pixelmint.webhooks import service as webhooks

router = APIRouter(prefix=service.PREFIX, route_class=ReplicateRoute, include_in_schema=False)

PAGE_SIZE = 100  # Replicate's
Limit = Annotated[int, Query(ge=1, le=PAGE_SIZE, description="Page size (an extension; `next` keeps it)")]
_PREFER_WAIT = re.compile(r"^\s*wait\s*(?:=\s*\"?(\d{1,6})\"?\s*)?$", re.IGNORECASE)


def wait_seconds(prefer: str | None, limit: float) -> float | None:
    """``Prefer: wait`` (up to ``limit`` seconds) or ``wait=N`` (N seconds, at most ``limit``) →
    how long to wait; ``None`` without it. Other preferences, and a malformed one, are ignored
    (RFC 7240 §2)."""
    for preference in re.split(r"[,;]", prefer or ""):
        if match := _PREFER_WAIT.match(preference):
            return limit if match[1] is None else max(1.0, min(float(match[1]), limit))
    return None


def _next(urls: UrlSigner, path: str, cursor: str | None, limit: int) -> str | None:
    if cursor is None:
        return None
    size = "" if limit == PAGE_SIZE else f"&limit={limit}"
    return f"{service.api_base(urls)}/{path}?cursor={cursor}{size}"


# --------------------------------------------------------------------------------------------
# Models and versions


@router.get("/v1/models", response_model=Page[Model])
async def list_models(
    principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep, limit: Limit = PAGE_SIZE,
    cursor: str | None = None,
) -> Page[Model]:
    """The catalog, then the team's custom models; ``next`` is an absolute URL."""
    after = decode_cursor(cursor, str, lambda v: v, lambda v: v) if cursor else None
    found, position = await service.list_models(session, principal, limit=limit, after=after)
    results = [service.present_model(model, latest, urls)
               for model, latest in zip(found, await service.latest_versions(session, found), strict=True)]
    return Page[Model](next=_next(urls, "models", encode_cursor(*position) if position else None, limit),
                       results=results)


@router.get("/v1/models/{owner}/{name}", response_model=Model)
async def get_model(owner: str, name: str, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> Model:
    model = await service.find_model(session, principal, owner, name)
    [latest] = await service.latest_versions(session, [model])
    return service.present_model(model, latest, urls)


@router.get("/v1/models/{owner}/{name}/versions", response_model=Page[Version])
async def list_versions(owner: str, name: str, principal: PrincipalDep, session: SessionDep) -> Page[Version]:
    """Newest first, on one page."""
    model = await service.find_model(session, principal, owner, name)
    return Page[Version](next=None, results=await service.versions_of(session, model))


@router.get("/v1/models/{owner}/{name}/versions/{version_id}", response_model=Version)
async def get_version(owner: str, name: str, version_id: str, principal: PrincipalDep, session: SessionDep) -> Version:
    """By id, or by number (``1``, ``2``…). ``replicate.run("owner/name:<id>")`` reads it to
    choose between a list and an iterator of outputs."""
    model = await service.find_model(session, principal, owner, name)
    return await service.find_version(session, model, version_id)


# --------------------------------------------------------------------------------------------
# Predictions


async def _answer_created(
    job: Job, prefer: str | None, *, session: SessionDep, settings: SettingsDep, db: DatabaseDep,
    events: JobEventsDep, urls: UrlSigner,
) -> Prediction:
    """Commit the queued prediction, wake the workers and, with ``Prefer: wait``, wait for it
    (bounded by ``PIXELMINT_WAIT_FOR_RESULT_TIMEOUT_SECONDS``). A prediction still unfinished
    when the wait ends is answered ``starting``, whatever it is doing: ``replicate.run`` polls
    only after ``starting``, and takes any other status as final (``replicate/run.py``)."""
    await session.commit()  # reserved and queued before the workers hear of it
    events.announce_jobs_available()
    wait = wait_seconds(prefer, settings.wait_for_result_timeout_seconds)
    if wait is not None:
        job = await wait_for_job(db, events, job, timeout=wait)
    prediction = await service.present_prediction(session, job, urls)
    if wait is not None and job.state not in FINISHED_STATES:
        prediction.status = "starting"
    return prediction


@router.post("/v1/models/{owner}/{name}/predictions", response_model=Prediction,
             status_code=status.HTTP_201_CREATED, dependencies=[rate_limit("generate")])
async def create_model_prediction(
    owner: str, name: str, body: ModelPredictionRequest, principal: PrincipalDep, session: SessionDep,
    settings: SettingsDep, db: DatabaseDep, events: JobEventsDep, urls: UrlSignerDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Prediction:
    """Run the model's latest version (``replicate.run("owner/name", input=…)``)."""
    target = names.parse_model_name(f"{owner}/{name}", principal.team_id)
    if target is None:
        raise ModelNotFound(f"No model {owner}/{name}.")
    job = await service.create_prediction(session, principal, target, body, settings=settings,
                                          pricing=await current_pricing(session), base_url=urls.base_url)
    return await _answer_created(job, prefer, session=session, settings=settings, db=db, events=events, urls=urls)


@router.post("/v1/predictions", response_model=Prediction, status_code=status.HTTP_201_CREATED,
             dependencies=[rate_limit("generate")])
async def create_prediction(
    body: PredictionRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, db: DatabaseDep,
    events: JobEventsDep, urls: UrlSignerDep, prefer: Annotated[str | None, Header()] = None,
) -> Prediction:
    """Run a version: ``owner/name[:version]`` or a version id alone (what
    ``replicate.run("owner/name:<version id>")`` sends)."""
    target = await service.target_of_version(session, principal, body.version)
    job = await service.create_prediction(session, principal, target, body, settings=settings,
                                          pricing=await current_pricing(session), base_url=urls.base_url)
    return await _answer_created(job, prefer, session=session, settings=settings, db=db, events=events, urls=urls)


@router.get("/v1/predictions", response_model=Page[Prediction])
async def list_predictions(
    principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep, limit: Limit = PAGE_SIZE,
    cursor: str | None = None,
) -> Page[Prediction]:
    """The team's predictions (image generations, also those made through the native API),
    newest first; ``next`` is an absolute URL that the SDK requests as it is."""
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await jobs.list_jobs(session, principal, job_type="image_generation", limit=limit + 1, after=after)
    page = rows[:limit]
    position = encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None
    return Page[Prediction](next=_next(urls, "predictions", position, limit),
                            results=await service.present_predictions(session, page, urls))


@router.get("/v1/predictions/{prediction_id}", response_model=Prediction)
async def get_prediction(prediction_id: str, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> Prediction:
    job = await service.get_prediction_job(session, principal, prediction_id)
    return await service.present_prediction(session, job, urls)


async def _cancel(session: SessionDep, principal: PrincipalDep, providers: ProvidersDep, job: Job) -> Job:
    """Cancel through the jobs service: a queued job now, with its credits released; a running
    one at its worker. A finished one is answered as it is, as Replicate does."""
    try:
        job = await jobs.cancel_job(session, principal, job.id)
    except JobFinished:
        return job
    await session.commit()  # canceled and released before the provider hears of it
    await jobs.cancel_at_provider(job, providers)
    return job


@router.post("/v1/predictions/{prediction_id}/cancel", response_model=Prediction)
async def cancel_prediction(
    prediction_id: str, principal: PrincipalDep, session: SessionDep, providers: ProvidersDep, urls: UrlSignerDep,
) -> Prediction:
    job = await service.get_prediction_job(session, principal, prediction_id)
    return await service.present_prediction(session, await _cancel(session, principal, providers, job), urls)


# --------------------------------------------------------------------------------------------
# Trainings


@router.post("/v1/models/{owner}/{name}/versions/{version_id}/trainings", response_model=Training,
             status_code=status.HTTP_201_CREATED, dependencies=[rate_limit("generate")])
async def create_training(
    owner: str, name: str, version_id: str, body: TrainingRequest, principal: PrincipalDep, session: SessionDep,
    settings: SettingsDep, storage: StorageDep, events: JobEventsDep, urls: UrlSignerDep,
) -> Training:
    """Train ``owner/name:version_id`` into ``destination``: a new custom model, or the next
    version of one (``service.create_training``)."""
    base = await service.find_model(session, principal, owner, name)
    version = await service.find_version(session, base, version_id)
    job = await service.create_training(session, principal, base, version, body, storage=storage,
                                        settings=settings, pricing=await current_pricing(session),
                                        base_url=urls.base_url)
    await session.commit()
    events.announce_jobs_available()
    return await service.present_training(session, job, urls)


@router.get("/v1/trainings/{training_id}", response_model=Training)
async def get_training(training_id: str, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> Training:
    job = await service.get_training_job(session, principal, training_id)
    return await service.present_training(session, job, urls)


@router.post("/v1/trainings/{training_id}/cancel", response_model=Training)
async def cancel_training(
    training_id: str, principal: PrincipalDep, session: SessionDep, providers: ProvidersDep, urls: UrlSignerDep,
) -> Training:
    job = await service.get_training_job(session, principal, training_id)
    return await service.present_training(session, await _cancel(session, principal, providers, job), urls)


# --------------------------------------------------------------------------------------------
# Webhooks


@router.get("/v1/webhooks/default/secret", response_model=WebhookSigningSecret)
async def default_webhook_secret(principal: PrincipalDep, session: SessionDep) -> WebhookSigningSecret:
    """The key that signs the team's prediction and training webhooks (Standard Webhooks, as
    Replicate signs them): what ``replicate.webhooks.validate`` takes. Created on first use."""
    return WebhookSigningSecret(key=await webhooks.default_secret(session, principal.team_id))


# --------------------------------------------------------------------------------------------
# Anything else under /replicate: Replicate's 404 (or 405), not the native one


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "QUERY"])
async def unknown(path: str, request: Request) -> Response:
    allowed = {method for route in router.routes if route.matches(request.scope)[0] == Match.PARTIAL
               for method in getattr(route, "methods", None) or ()}
    if allowed:
        return problem(405, f"{request.method} is not allowed here.", headers={"Allow": ", ".join(sorted(allowed))})
    return render(NotFound(f"No such endpoint: {request.method} {request.url.path}."))
