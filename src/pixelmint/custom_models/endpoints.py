"""``/api/v1/models``: custom models: create (train), list, get, rename, delete, refine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from pixelmint.accounts.auth import IdempotencyDep, PrincipalDep, rate_limit
from pixelmint.credits.pricing import current_pricing
from pixelmint.custom_models import downloads, service
from pixelmint.custom_models.schemas import (
    CreateModelJson,
    CustomModelOut,
    ModelPage,
    ModelPatch,
    ModelVersionOut,
    ModelWithJob,
    RefineRequest,
)
from pixelmint.custom_models.tables import CustomModel
from pixelmint.jobs.deps import JobEventsDep
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.presenters import present_job
from pixelmint.jobs.tables import Job
from pixelmint.kit import idempotency
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.kit.idempotency import Idempotency
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.storage.deps import StorageDep, UrlSignerDep
from pixelmint.storage.schemas import UrlSigner

router = APIRouter(prefix="/api/v1/models", tags=["custom models"])


def present(model: CustomModel, versions=None) -> CustomModelOut:
    return CustomModelOut(
        id=model.id, name=model.name, description=model.description, reference_model_id=model.reference_model_id,
        status=model.status, version=model.version, trigger_word=model.trigger_word,
        training_steps=model.training_steps, training_image_count=len(model.training_images),
        artifact=model.artifact, error_message=model.error_message, created_at=model.created_at,
        updated_at=model.updated_at,
        versions=None if versions is None else [ModelVersionOut.model_validate(v) for v in versions],
    )


async def _parse_create(
    request: Request, settings: SettingsDep
) -> AsyncIterator[tuple[CreateModelJson, list[service.TrainingImage]]]:
    """JSON (training images by URL) or multipart form data (files in ``trainingImages``). Uploaded
    and downloaded images wait in spooled temporary files (on disk beyond 1 MiB each), closed
    after the request; the body's size is capped before (``kit/limits.py``)."""
    content_type = request.headers.get("content-type", "")
    if request.headers.get(idempotency.HEADER):
        await request.body()  # cache the raw body: the Idempotency-Key fingerprint hashes it after us
    form = None
    downloaded: list[service.TrainingImage] = []
    try:
        try:
            if content_type.startswith("multipart/form-data"):
                form = await request.form()
                fields: dict[str, Any] = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile) and k != "trainingImageUrls"}
                fields["trainingImageUrls"] = [v for v in form.getlist("trainingImageUrls") if isinstance(v, str)]
                body = CreateModelJson.model_validate(fields)
                files = [service.TrainingImage(f.filename or "image", f.file)
                         for f in form.getlist("trainingImages") if isinstance(f, UploadFile)]
            else:
                body = CreateModelJson.model_validate_json(await request.body())
                files = []
        except ValidationError as exc:  # rendered as FastAPI's own (api/errors.py): invalid_request, invalid_text
            raise RequestValidationError(exc.errors(include_url=False)) from None
        await downloads.download(
            body.training_image_urls, downloaded, allow_private=settings.allow_private_urls
        )
        yield body, files + downloaded
    finally:
        for image in downloaded:
            image.file.close()
        if form is not None:
            await form.close()


async def _queued(
    model: CustomModel, job: Job, session: AsyncSession, urls: UrlSigner, events: JobEvents, idempotency: Idempotency
) -> JSONResponse:
    """Answer 202 with the model and its queued job; the answer is stored for ``Idempotency-Key``
    in the transaction that reserves the job's credits, which commits here, before the workers
    are woken."""
    answer = ModelWithJob(model=present(model), job=await present_job(session, job, urls))
    response = JSONResponse(answer.model_dump(mode="json", by_alias=True), status_code=status.HTTP_202_ACCEPTED)
    await idempotency.save(response)
    await session.commit()
    events.announce_jobs_available()
    return response


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ModelWithJob,
    summary="Create a custom model (queues its training)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": CreateModelJson.model_json_schema(by_alias=True)},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "referenceModelId": {"type": "string"}, "name": {"type": "string"},
                            "description": {"type": "string"}, "triggerWord": {"type": "string"},
                            "trainingSteps": {"type": "integer"},
                            "trainingImages": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "trainingImageUrls": {"type": "array", "items": {"type": "string"}},
                        },
                        "required": ["referenceModelId", "name"],
                    }
                },
            },
            "required": True,
        }
    },
    dependencies=[rate_limit("generate")],
)
async def create_model(
    principal: PrincipalDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    urls: UrlSignerDep,
    events: JobEventsDep,
    parsed: Annotated[tuple[CreateModelJson, list[service.TrainingImage]], Depends(_parse_create)],
    idempotency: IdempotencyDep,
) -> ModelWithJob | JSONResponse:
    """Price the training with the model-creation formula, reserve it and queue a
    ``model_creation`` job; the model is ``pending`` until the job succeeds (then ``ready``,
    version 1) or fails (``failed``, credits released). The body is parsed (and image URLs
    fetched) before the ``Idempotency-Key`` is claimed, so a malformed request never uses it up."""
    body, images = parsed
    model, job = await service.create_model(
        session, principal, reference_model_id=body.reference_model_id, name=body.name,
        description=body.description, trigger_word=body.trigger_word, training_steps=body.training_steps,
        images=images, storage=storage, settings=settings, pricing=await current_pricing(session),
    )
    return await _queued(model, job, session, urls, events, idempotency)


@router.get("", response_model=ModelPage, summary="The team's custom models, newest first")
async def list_models(
    principal: PrincipalDep,
    session: SessionDep,
    status_: Annotated[Literal[service.MODEL_STATES] | None, Query(alias="status")] = None,  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> ModelPage:
    after = None
    if cursor:
        after = tuple(decode_cursor(cursor, timestamp, uuid.UUID))
    rows = await service.list_models(session, principal, status=status_, limit=limit + 1, after=after)
    page = rows[:limit]
    return ModelPage(
        items=[present(m) for m in page],
        next_cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None,
    )


@router.get("/{model_id}", response_model=CustomModelOut, summary="A custom model with its versions")
async def get_model(model_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> CustomModelOut:
    model = await service.get_model(session, principal, model_id)
    return present(model, await service.versions(session, model.id))


@router.patch("/{model_id}", response_model=CustomModelOut, summary="Rename or redescribe a custom model")
async def update_model(model_id: uuid.UUID, body: ModelPatch, principal: PrincipalDep, session: SessionDep) -> CustomModelOut:
    model = await service.update_model(session, principal, model_id, name=body.name, description=body.description)
    return present(model)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a custom model (soft)")
async def delete_model(model_id: uuid.UUID, principal: PrincipalDep, session: SessionDep) -> Response:
    await service.delete_model(session, principal, model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{model_id}/refine", status_code=status.HTTP_202_ACCEPTED, response_model=ModelWithJob,
    summary="Refine a custom model into its next version", dependencies=[rate_limit("generate")],
)
async def refine_model(
    model_id: uuid.UUID, body: RefineRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep,
    urls: UrlSignerDep, events: JobEventsDep, idempotency: IdempotencyDep,
) -> ModelWithJob | JSONResponse:
    """Queue a ``model_refinement`` job priced by the refinement formula (iteration = the current
    version); on success the model's version increments and its history records the prompt,
    iteration, cost and artifact."""
    model, job = await service.refine_model(
        session, principal, model_id, prompt=body.prompt, settings=settings, pricing=await current_pricing(session),
    )
    return await _queued(model, job, session, urls, events, idempotency)
