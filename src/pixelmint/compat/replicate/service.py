"""Replicate's models, versions, predictions and trainings, mapped onto Pixelmint's own.

- **Models** are the catalog (``pixelmint/<referenceModelId>``, public, one version) and the
  caller team's custom models (``<teamId>/<customModelId>``, private, a version per training or
  refinement); names and version ids come from ``compat/names.py``. Every version has the same
  ``openapi_schema``: ``Input`` is ``PredictionInput``, ``Output`` a plain array of URIs (so
  ``replicate.run`` returns a list, not an iterator: ``replicate/run.py``
  ``_has_output_iterator_array_type``).
- **Predictions are image-generation jobs**; the prediction id is the job id. They are submitted
  by ``flows/generation.submit_generation``, as ``POST /api/v1/generate`` does: the same price,
  free generations, reservation, plan concurrency and queue limits.
- **Trainings are model creation and refinement jobs** (``custom_models.service``), priced and
  reserved by the same formulas; a succeeded training's ``output.version`` is
  ``<teamId>/<customModelId>:<version id>``, which ``replicate.run`` takes as it is.

Webhooks: a prediction or training keeps its ``webhook`` in its job's params (``webhook_params``);
``queue_webhook``, a job listener (``tasks.py``), queues the delivery of the prediction as ``GET``
answers it in the transaction where the job starts or finishes.

Statuses (``status_of``): queued → ``starting``; running and awaiting_webhook → ``processing``;
succeeded, failed, canceled as they are. ``expired`` (a succeeded job whose images passed
retention) is ``succeeded`` with ``output: null`` and ``data_removed: true``, which is what
Replicate answers for a prediction whose outputs it deleted: the work did succeed (and was paid
for), so ``failed`` would be false, and a URL list would point at nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal
from pixelmint.catalog import service as catalog
from pixelmint.catalog.errors import ModelNotFound
from pixelmint.catalog.tables import ReferenceModel
from pixelmint.compat import names
from pixelmint.compat.replicate.errors import (
    InvalidDestination,
    InvalidVersion,
    PredictionNotFound,
    TrainingNotFound,
    VersionNotFound,
)
from pixelmint.compat.replicate.schemas import (
    WEBHOOK_EVENTS,
    Model,
    ModelPredictionRequest,
    Prediction,
    PredictionInput,
    Status,
    Training,
    TrainingInput,
    TrainingRequest,
    Version,
    WebhookFields,
)
from pixelmint.credits.pricing import Pricing
from pixelmint.custom_models import downloads
from pixelmint.custom_models import service as custom_models
from pixelmint.custom_models.tables import CustomModel
from pixelmint.flows.generation import submit_generation
from pixelmint.jobs import service as jobs
from pixelmint.jobs.errors import JobNotFound
from pixelmint.jobs.schemas import GenerateRequest
from pixelmint.jobs.tables import Job
from pixelmint.kit.errors import InvalidRequest
from pixelmint.kit.pagination import timestamp
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage
from pixelmint.storage.schemas import UrlSigner, present_image
from pixelmint.storage.service import images_for_jobs
from pixelmint.webhooks import service as webhooks
from pixelmint.webhooks.errors import InvalidWebhookUrl, WebhookUrlNotAllowed

log = structlog.get_logger(__name__)

PREFIX = "/replicate"  # where api/app.py mounts this surface
COG_VERSION = "0.14.0"  # ≥ 0.3.9: an array Output is a list, not an iterator (replicate/schema.py)
PARAMS_KEY = "replicate"  # what a job keeps of this surface in its params (webhook, training input)
TRAINING_TYPES = ("model_creation", "model_refinement")
_STATUSES: dict[str, Status] = {
    "queued": "starting", "running": "processing", "awaiting_webhook": "processing", "succeeded": "succeeded",
    "failed": "failed", "canceled": "canceled", "expired": "succeeded",
}


def api_base(urls: UrlSigner) -> str:
    """This surface's absolute base (``…/replicate/v1``), on the server's public address."""
    return f"{urls.base_url.rstrip('/')}{PREFIX}/v1"


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """A version's ``openapi_schema``, as cog writes it: what matters to clients is
    ``components.schemas.Input`` and ``Output``. Built once and shared: not to be modified."""
    return {
        "openapi": "3.0.2",
        "info": {"title": "Pixelmint", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {
            "Input": PredictionInput.model_json_schema(),
            "Output": {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"},
        }},
    }


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: dict[str, Any], field: str) -> M:
    """``data`` as ``model``; a mistake is 422 with the field's place in the body."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", field, *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


# --------------------------------------------------------------------------------------------
# Models and versions


@dataclass(frozen=True)
class FoundModel:
    """A model of this surface: a catalog model or one of the team's custom models."""

    owner: str
    name: str
    reference: ReferenceModel | None = None
    custom: CustomModel | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


async def find_model(session: AsyncSession, principal: Principal, owner: str, name: str) -> FoundModel:
    """``owner/name`` → the model. Raises ``NotFound`` (model_not_found): malformed, another
    team's, unknown, deleted."""
    parsed = names.parse_model_name(f"{owner}/{name}", principal.team_id)
    if parsed is None:
        raise ModelNotFound(f"No model {owner}/{name}.")
    if parsed.reference_model_id is not None:
        return FoundModel(owner, name, reference=await catalog.get_model(session, parsed.reference_model_id))
    assert parsed.custom_model_id is not None
    return FoundModel(owner, name, custom=await custom_models.get_model(session, principal, parsed.custom_model_id))


def _version(version_id: str, created_at: dt.datetime | None) -> Version:
    return Version(id=version_id, created_at=_time(created_at) or "", cog_version=COG_VERSION,
                   openapi_schema=openapi_schema())


def _catalog_version(reference: ReferenceModel) -> Version:
    return _version(names.catalog_version_id(reference.id), reference.created_at)


async def versions_of(session: AsyncSession, model: FoundModel) -> list[Version]:
    """The model's versions, newest first."""
    if model.reference is not None:
        return [_catalog_version(model.reference)]
    assert model.custom is not None
    rows = await custom_models.versions(session, model.custom.id)
    return [_version(names.version_id(model.custom.id, row.version), row.created_at) for row in reversed(rows)]


async def latest_versions(session: AsyncSession, models: list[FoundModel]) -> list[Version | None]:
    """Each model's newest version (``None``: a custom model without one yet), with one statement
    for all the custom models."""
    custom = await custom_models.latest_versions(session, [m.custom.id for m in models if m.custom is not None])
    latest: list[Version | None] = []
    for model in models:
        if model.reference is not None:
            latest.append(_catalog_version(model.reference))
        elif model.custom is not None and (row := custom.get(model.custom.id)) is not None:
            latest.append(_version(names.version_id(model.custom.id, row.version), row.created_at))
        else:
            latest.append(None)
    return latest


async def find_version(session: AsyncSession, model: FoundModel, version: str) -> Version:
    """One of the model's versions, by id or number. Raises ``NotFound`` (version_not_found)."""
    for found in await versions_of(session, model):
        parsed = names.parse_version_id(found.id)
        if version == found.id or (parsed is not None and version == str(parsed[1])):
            return found
    raise VersionNotFound(f"Model {model.full_name} has no version {version}.")


def present_model(model: FoundModel, latest: Version | None, urls: UrlSigner) -> Model:
    cover = None
    if model.reference is not None:
        description: str | None = model.reference.description or model.reference.name
        if model.reference.preview_images:
            cover = urls.url(model.reference.preview_images[0]["key"])
    else:
        assert model.custom is not None
        description = ": ".join(part for part in (model.custom.name, model.custom.description) if part)
    return Model(
        url=f"{api_base(urls)}/models/{model.full_name}", owner=model.owner, name=model.name,
        description=description, visibility="public" if model.reference is not None else "private",
        run_count=0, cover_image_url=cover, latest_version=latest,
    )


async def list_models(
    session: AsyncSession, principal: Principal, *, limit: int, after: list[Any] | None
) -> tuple[list[FoundModel], list[Any] | None]:
    """The catalog by name, then the team's custom models newest first, ``limit`` at a time;
    keyset-paginated: ``after`` (and the returned next position) is ``["catalog", name, id]`` or
    ``["custom", created_at, id]`` (``null``s: from the first). Raises ``InvalidRequest``
    (invalid_cursor) for another ``after``."""
    found: list[FoundModel] = []
    custom_after = None
    try:
        if after is None or after[0] == "catalog":
            page = await catalog.list_models(session, sort="name", limit=limit,
                                             after=(str(after[1]), str(after[2])) if after else None)
            found = [FoundModel(names.CATALOG_OWNER, m.id, reference=m) for m in page.items]
            if page.next_after is not None:
                return found, ["catalog", *page.next_after]
        elif after[0] == "custom" and after[1] is not None:
            custom_after = (timestamp(after[1]), uuid.UUID(after[2]))
        elif after[0] != "custom":
            raise ValueError
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequest("The cursor is not valid; follow `next`.", code="invalid_cursor") from None
    room = limit - len(found)
    if room <= 0:
        return found, ["custom", None, None]
    rows = await custom_models.list_models(session, principal, status=None, limit=room + 1, after=custom_after)
    found += [FoundModel(str(principal.team_id), str(m.id), custom=m) for m in rows[:room]]
    if len(rows) > room:
        last = rows[room - 1]
        return found, ["custom", last.created_at.isoformat(), str(last.id)]
    return found, None


# --------------------------------------------------------------------------------------------
# Predictions


async def webhook_params(body: WebhookFields, *, base_url: str, allow_private: bool) -> dict[str, Any] | None:
    """What a prediction or training keeps of its webhook: ``{"webhook": url,
    "webhookEventsFilter": [events], "baseUrl": base_url}`` (all four events by default;
    ``completed`` alone for the older ``webhook_completed``; ``base_url``: where this server is
    reached, for the absolute URLs of the payload: the request's ``UrlSigner.base_url``), or
    ``None``. Raises ``InvalidRequest``: ``invalid_webhook_url`` for a URL that is not absolute
    http(s) without credentials, ``webhook_url_not_allowed`` for one whose host resolves to a
    private or loopback address unless ``allow_private`` (``PIXELMINT_ALLOW_PRIVATE_URLS``; every
    delivery checks again, connecting to the address it checked)."""
    url = body.webhook or body.webhook_completed
    if url is None:
        if body.webhook_events_filter:
            raise InvalidWebhookUrl("webhook_events_filter needs a webhook.", field="webhook_events_filter")
        return None
    field = "webhook" if body.webhook else "webhook_completed"
    try:
        await webhooks.check_target(url, allow_private=allow_private)
    except (InvalidWebhookUrl, WebhookUrlNotAllowed) as exc:
        message = exc.message if isinstance(exc, WebhookUrlNotAllowed) else f"{field} must be an absolute http(s) URL."
        raise type(exc)(message, field=field) from None
    if body.webhook_events_filter:
        events: list[str] = [e for e in WEBHOOK_EVENTS if e in body.webhook_events_filter]
    else:
        events = list(WEBHOOK_EVENTS) if body.webhook else ["completed"]
    return {"webhook": url, "webhookEventsFilter": events, "baseUrl": base_url}


async def _catalog_with_key(session: AsyncSession, key: uuid.UUID) -> str | None:
    for reference_id in await catalog.model_ids(session):
        if names.catalog_key(reference_id) == key:
            return reference_id
    return None


async def target_of_version(session: AsyncSession, principal: Principal, version: str) -> names.ModelName:
    """``POST /v1/predictions``' ``version`` → the model and version to run: ``owner/name``,
    ``owner/name:<number or version id>`` or a bare version id. Raises ``InvalidRequest``
    (invalid_version), ``NotFound`` (model_not_found, version_not_found)."""
    if "/" in version:
        parsed = names.parse_model_name(version, principal.team_id)
        if parsed is None:
            raise ModelNotFound(f"No model version {version}.")
        return parsed
    decoded = names.parse_version_id(version)
    if decoded is None:
        raise InvalidVersion(
            f"version {version!r} names no model: give owner/name:{version}, or a version id from "
            "GET /v1/models/{owner}/{name}/versions.", field="version")
    key, number = decoded
    reference_id = await _catalog_with_key(session, key)
    if reference_id is not None:
        if number != 1:
            raise VersionNotFound(f"No version {version}.")
        return names.ModelName(reference_model_id=reference_id)
    return names.ModelName(custom_model_id=key, version=number)


def generate_request(target: names.ModelName, data: dict[str, Any]) -> GenerateRequest:
    """A prediction's ``input`` as a native generation request. Raises ``RequestValidationError``."""
    inputs = _validated(PredictionInput, data, "input")
    return GenerateRequest(
        reference_model_id=target.reference_model_id, custom_model_id=target.custom_model_id,
        custom_model_version=target.version, prompt=inputs.prompt, negative_prompt=inputs.negative_prompt,
        resolution=f"{inputs.width}x{inputs.height}", quality=inputs.quality, num_images=inputs.num_outputs,
        seed=inputs.seed,
    )


async def create_prediction(
    session: AsyncSession, principal: Principal, target: names.ModelName, body: ModelPredictionRequest, *,
    settings: Settings, pricing: Pricing, base_url: str,
) -> Job:
    """Queue the prediction through ``submit_generation`` (price, free generation or reservation,
    plan limits), keeping its webhook with it (``webhook_params``). Raises what that raises (402
    ``insufficient_credits``, 404, 409, 422, 429 ``queue_full``) and ``InvalidRequest``
    (invalid_webhook_url, webhook_url_not_allowed)."""
    hook = await webhook_params(body, base_url=base_url, allow_private=settings.allow_private_urls)
    job, _ = await submit_generation(session, principal, generate_request(target, body.input),
                                     settings=settings, pricing=pricing)
    if hook is not None:
        await jobs.annotate(session, job, PARAMS_KEY, hook)
    return job


async def get_prediction_job(session: AsyncSession, principal: Principal, prediction_id: str) -> Job:
    """The team's image-generation job with this id. Raises ``NotFound`` (prediction_not_found)."""
    return await _job_of(session, principal, prediction_id, ("image_generation",), PredictionNotFound)


async def _job_of(
    session: AsyncSession, principal: Principal, job_id: str, types: tuple[str, ...],
    missing: type[PredictionNotFound] | type[TrainingNotFound],
) -> Job:
    try:
        job = await jobs.get_job(session, principal, uuid.UUID(job_id))
    except (ValueError, JobNotFound):
        raise missing(f"No {missing.__name__.removesuffix('NotFound').lower()} {job_id}.") from None
    if job.type not in types:
        raise missing(f"No {missing.__name__.removesuffix('NotFound').lower()} {job_id}.")
    return job


def status_of(job: Job) -> Status:
    return _STATUSES[job.state]


def prediction_input(params: dict[str, Any]) -> dict[str, Any]:
    """A generation job's inputs, named as ``PredictionInput`` names them (the seed it drew)."""
    inputs = {
        "prompt": params.get("prompt"), "negative_prompt": params.get("negativePrompt"),
        "width": params.get("width"), "height": params.get("height"), "num_outputs": params.get("numImages"),
        "seed": params.get("seed"), "quality": params.get("quality"),
    }
    return {key: value for key, value in inputs.items() if value is not None}


def _metrics(job: Job) -> dict[str, float]:
    metrics = {}
    if job.started_at and job.finished_at:
        metrics["predict_time"] = (job.finished_at - job.started_at).total_seconds()
    if job.finished_at:
        metrics["total_time"] = (job.finished_at - job.created_at).total_seconds()
    return metrics


def _model_and_version(job: Job) -> tuple[str, str]:
    if job.custom_model_id is not None:
        return (names.custom_name(job.team_id, job.custom_model_id),
                names.version_id(job.custom_model_id, job.custom_model_version or 1))
    reference = job.reference_model_id or ""
    return names.catalog_name(reference), names.catalog_version_id(reference)


def _urls(base: str, kind: str, job: Job) -> dict[str, str]:
    return {"get": f"{base}/{kind}/{job.id}", "cancel": f"{base}/{kind}/{job.id}/cancel"}


async def present_predictions(
    session: AsyncSession, found: list[Job], urls: UrlSigner, *, logs: dict[uuid.UUID, str] | None = None
) -> list[Prediction]:
    """Jobs as Replicate predictions; ``output`` lists signed URLs of their images (one query for
    all). ``logs``: each job's log text, when read (a list leaves it empty)."""
    done = [job.id for job in found if job.state == "succeeded"]
    images = await images_for_jobs(session, done) if done else {}
    base = api_base(urls)
    predictions = []
    for job in found:
        model, version = _model_and_version(job)
        output = [present_image(i, urls).url for i in images.get(job.id, [])] if job.state == "succeeded" else None
        predictions.append(Prediction(
            id=str(job.id), model=model, version=version, input=prediction_input(job.params), output=output,
            logs=(logs or {}).get(job.id, ""), error=job.error_message if job.state == "failed" else None,
            status=status_of(job), data_removed=job.state == "expired", created_at=_time(job.created_at) or "",
            started_at=_time(job.started_at), completed_at=_time(job.finished_at), urls=_urls(base, "predictions", job),
            metrics=_metrics(job),
        ))
    return predictions


async def job_log_text(session: AsyncSession, job: Job) -> dict[uuid.UUID, str]:
    return {job.id: "\n".join(line.message for line in await jobs.job_logs(session, job.id))}


async def present_prediction(session: AsyncSession, job: Job, urls: UrlSigner) -> Prediction:
    return (await present_predictions(session, [job], urls, logs=await job_log_text(session, job)))[0]


# --------------------------------------------------------------------------------------------
# Trainings


@contextmanager
def _closing(images: list[custom_models.TrainingImage]) -> Iterator[list[custom_models.TrainingImage]]:
    try:
        yield images
    finally:
        for image in images:
            image.file.close()


async def create_training(
    session: AsyncSession, principal: Principal, base: FoundModel, base_version: Version, body: TrainingRequest, *,
    storage: Storage, settings: Settings, pricing: Pricing, base_url: str,
) -> Job:
    """Queue a training of ``base`` into ``body.destination`` (``<teamId>/<name>``):

    - a name that is not one of the team's custom models: a new custom model named so, trained
      from ``base`` (a catalog model) on ``input.input_images``: ``custom_models.create_model``;
    - one of the team's custom models (``<teamId>/<customModelId>``), trained from itself or from
      its catalog model: its next version, refined by ``input.prompt``: ``custom_models.refine_model``.

    Priced and reserved as the native endpoints do. Raises ``InvalidRequest``
    (invalid_destination, invalid_webhook_url, webhook_url_not_allowed, invalid_training_images,
    training_image_unreachable…), ``NotFound``, ``Forbidden`` (free plan), ``InsufficientCredits``.
    """
    hook = await webhook_params(body, base_url=base_url, allow_private=settings.allow_private_urls)
    owner, _, name = body.destination.partition("/")
    if owner != str(principal.team_id) or not name or "/" in name or ":" in name:
        raise InvalidDestination(
            f"destination must be {principal.team_id}/<name>: a new model's name, or one of the team's custom "
            "model ids.", field="destination")
    inputs = _validated(TrainingInput, body.input, "input")
    try:
        existing: uuid.UUID | None = uuid.UUID(name)
    except ValueError:
        existing = None
    if existing is not None:
        model = await custom_models.get_model(session, principal, existing)
        if not ((base.custom is not None and base.custom.id == model.id)
                or (base.reference is not None and base.reference.id == model.reference_model_id)):
            raise InvalidDestination(
                f"{body.destination} is trained from {names.catalog_name(model.reference_model_id)} or from itself, "
                f"not from {base.full_name}.", field="destination")
        if not inputs.prompt:
            raise InvalidRequest("Refining a model takes input.prompt.", code="invalid_prompt", field="input.prompt")
        _, job = await custom_models.refine_model(session, principal, model.id, prompt=inputs.prompt,
                                                  settings=settings, pricing=pricing)
    else:
        if base.reference is None:
            raise InvalidDestination(
                "A new model is trained from a catalog model (pixelmint/<referenceModelId>); to refine "
                f"{base.full_name}, give it as the destination.", field="destination")
        image_urls = [inputs.input_images] if isinstance(inputs.input_images, str) else inputs.input_images or []
        with _closing([]) as images:
            await downloads.download(image_urls, images, allow_private=settings.allow_private_image_urls)
            _, job = await custom_models.create_model(
                session, principal, reference_model_id=base.reference.id, name=name, description=inputs.description,
                trigger_word=inputs.trigger_word, training_steps=inputs.steps, images=images, storage=storage,
                settings=settings, pricing=pricing,
            )
    await jobs.annotate(session, job, PARAMS_KEY, {
        "model": base.full_name, "version": base_version.id, "input": body.input, **(hook or {}),
    })
    return job


async def get_training_job(session: AsyncSession, principal: Principal, training_id: str) -> Job:
    """The team's model creation or refinement job with this id. Raises ``NotFound``
    (training_not_found)."""
    return await _job_of(session, principal, training_id, TRAINING_TYPES, TrainingNotFound)


async def present_training(session: AsyncSession, job: Job, urls: UrlSigner) -> Training:
    """A creation or refinement job as a Replicate training; once succeeded, ``output.version``
    is ``<teamId>/<customModelId>:<version id>`` of the version it made."""
    kept = job.params.get(PARAMS_KEY) or {}
    assert job.custom_model_id is not None
    destination = names.custom_name(job.team_id, job.custom_model_id)
    if "model" in kept:
        model, version = kept["model"], kept["version"]
    elif job.type == "model_creation":
        model = names.catalog_name(job.reference_model_id or "")
        version = names.catalog_version_id(job.reference_model_id or "")
    else:
        model, version = destination, names.version_id(job.custom_model_id, job.custom_model_version or 1)
    output = None
    if job.state == "succeeded" and (made := await custom_models.version_made_by(session, job.id)) is not None:
        output = {"version": f"{destination}:{names.version_id(job.custom_model_id, made)}", "weights": None}
    logs = await job_log_text(session, job)
    return Training(
        id=str(job.id), model=model, version=version, destination=destination,
        input=kept.get("input", {key: value for key, value in job.params.items() if key != PARAMS_KEY}),
        output=output, logs=logs[job.id], error=job.error_message if job.state == "failed" else None,
        status=status_of(job), created_at=_time(job.created_at) or "", started_at=_time(job.started_at),
        completed_at=_time(job.finished_at), urls=_urls(api_base(urls), "trainings", job), metrics=_metrics(job),
    )


# --------------------------------------------------------------------------------------------
# Webhooks: a prediction's (or training's) own, queued when its job starts and when it finishes


@dataclass(frozen=True)
class PredictionEvent:
    """A webhook delivery a job's change calls for: POST ``payload`` to ``url``, signed as
    Replicate signs (Standard Webhooks). ``event`` is Replicate's event name."""

    url: str
    events: tuple[str, ...]  # the prediction's webhook_events_filter
    event: str  # start | completed
    payload: dict[str, Any]  # the prediction (or training) as GET answers it


def event_of(job: Job) -> str | None:
    """The Replicate event a job's state is: ``start`` when it begins to run, ``completed`` when
    it finished (succeeded, failed, canceled); ``None`` otherwise."""
    if job.state == "running":
        return "start"
    if job.state in ("succeeded", "failed", "canceled"):
        return "completed"
    return None


def wants(events: Collection[str], event: str, state: str) -> bool:
    """Whether a webhook whose ``webhook_events_filter`` is ``events`` takes ``event`` of a job in
    ``state``. Replicate sends ``output`` as each output is produced and ``logs`` as log lines
    come; here the images all arrive at once, when the job succeeds, and the log is whole when it
    finishes, so both are delivered with ``completed``: one delivery at the finish for a filter
    with ``completed`` or ``logs``, or with ``output`` when the job succeeded (a failed or canceled
    job has no output to send)."""
    if event == "start":
        return "start" in events
    return "completed" in events or "logs" in events or ("output" in events and state == "succeeded")


async def prediction_event_for(session: AsyncSession, job: Job, urls: UrlSigner) -> PredictionEvent | None:
    """The delivery to make for ``job`` as it is now, or ``None``: no webhook, or its filter does
    not take this event (``wants``). ``urls`` signs the output URLs and gives the absolute
    ``urls.get``."""
    kept = job.params.get(PARAMS_KEY) or {}
    event = event_of(job)
    events = tuple(kept.get("webhookEventsFilter", ()))
    if not kept.get("webhook") or event is None or not wants(events, event, job.state):
        return None
    if job.type == "image_generation":
        payload = (await present_prediction(session, job, urls)).model_dump(mode="json")
    else:
        payload = (await present_training(session, job, urls)).model_dump(mode="json")
    return PredictionEvent(url=kept["webhook"], events=events, event=event, payload=payload)


async def queue_webhook(session: AsyncSession, job: Job, *, storage: Storage, settings: Settings) -> bool:
    """The job (any type) started or finished, in the transaction that changed it: when it is a
    prediction or training whose webhook takes this event, queue the delivery of the prediction
    as it is now (``webhooks.service.emit_to_url``: the outbox, signed with the team's default
    secret; labelled ``prediction.start``, ``training.completed``…). Returns whether it queued
    one. Cheap for other jobs (no statement).

    Presented in a savepoint: a failure to build the payload loses this delivery (logged) rather
    than the job's transition (which, at a claim, would also hold back every job claimed with it).
    The payload's absolute URLs use the base the prediction was created on (``baseUrl``)."""
    kept = job.params.get(PARAMS_KEY) or {}
    if not kept.get("webhook") or event_of(job) is None:
        return False
    urls = UrlSigner(storage, kept.get("baseUrl") or settings.public_url or "http://localhost/",
                     settings.signed_url_ttl_seconds)
    kind = "prediction" if job.type == "image_generation" else "training"
    try:
        async with session.begin_nested():
            event = await prediction_event_for(session, job, urls)
            if event is None:
                return False
            await webhooks.emit_to_url(session, job.team_id, event.url, f"{kind}.{event.event}", event.payload)
    except Exception:  # noqa: BLE001 - a webhook must never block the job's own transition
        log.exception("replicate_webhook_not_queued", job=str(job.id), state=job.state)
        return False
    return True
