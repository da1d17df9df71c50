"""Custom models: the list (status badges, search), the new-model form (reference model, training
images, trigger word, steps, a live cost estimate), a model's page (status, versions with their
refinement prompt, cost and a sample image, refine, rename) and deleting one after a confirmation.

The same services as ``/api/v1/models`` (``custom_models.service``); creating and refining reserve
credits in the request's transaction, which commits before the workers are woken, as the API
does. A refusal (402 insufficient_credits, 403 plan_upgrade_required, a bad image) re-renders the
form with the reason in words, after rolling the transaction back.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from pixelmint.catalog import service as catalog
from pixelmint.catalog.tables import ReferenceModel
from pixelmint.credits.pricing import current_pricing
from pixelmint.custom_models import service as custom_models
from pixelmint.custom_models.tables import CustomModel
from pixelmint.flows import pricing
from pixelmint.jobs import service as jobs
from pixelmint.jobs.deps import JobEventsDep
from pixelmint.jobs.presenters import present_jobs
from pixelmint.kit.errors import PixelmintError
from pixelmint.kit.http import SessionDep, SettingsDep, rate_limit
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.settings import Settings
from pixelmint.storage.deps import StorageDep, UrlSignerDep
from pixelmint.storage.schemas import UrlSigner
from pixelmint.web.auth import CurrentUserDep, web_principal
from pixelmint.web.forms import CreateModelForm, RefineForm, RenameForm
from pixelmint.web.routing import web_router
from pixelmint.web.spending import Estimate, available_credits, explain, placeholder_images
from pixelmint.web.templating import is_htmx, render

router = web_router(prefix="/app/models")

PAGE_SIZE = 20
# How often a model's page asks again while it trains or refines (htmx polling, seconds).
POLL_SECONDS = 2
ACTIVE = ("queued", "running", "awaiting_webhook")
SPENDS = [rate_limit("generate", web_principal)]


async def reference_models(session: AsyncSession) -> list[ReferenceModel]:
    """Every active reference model, for the pickers (the catalog is small: tens of models)."""
    return (await catalog.list_models(session, sort="name", limit=1000)).items


# --------------------------------------------------------------------------------------------
# The list


@router.get("")
async def models_page(
    request: Request, session: SessionDep, user: CurrentUserDep,
    q: Annotated[str, Query(max_length=200)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    cursor: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await custom_models.list_models(
        session, user.principal, status=status if status in custom_models.MODEL_STATES else None,
        limit=PAGE_SIZE + 1, after=after, search=q,
    )
    page = rows[:PAGE_SIZE]
    next_cursor = encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > PAGE_SIZE else None
    return render(request, "models.html", {
        "models": page, "q": q, "status": status, "states": custom_models.MODEL_STATES, "cursor": cursor,
        "next_cursor": next_cursor,
    }, block="results")


# --------------------------------------------------------------------------------------------
# A new model


async def creation_estimate(
    session: AsyncSession, user: CurrentUserDep, settings: Settings, reference_model_id: str, image_count: int,
) -> Estimate:
    """What training would reserve (``flows.pricing.estimate``, as ``POST /api/v1/credits/estimate``)."""
    available = await available_credits(session, user.principal)
    free_plan = user.principal.plan_max_concurrent_jobs == 0
    try:
        cost = await pricing.estimate(
            session, user.principal, operation="model_creation", reference_model_id=reference_model_id or None,
            custom_model_id=None, resolution="", quality="standard", num_images=1,
            training_images=max(1, image_count), iteration=None, settings=settings,
        )
    except PixelmintError as exc:
        return Estimate(None, available, free_plan, error=exc.message)
    return Estimate(cost, available, free_plan)


async def _new_page(
    request: Request, session: SessionDep, settings: Settings, user: CurrentUserDep, form: CreateModelForm,
    *, errors: dict[str, str] | None = None, error: str | None = None, status_code: int = 200,
) -> Response:
    references = await reference_models(session)
    reference_id = form.reference_model_id or (references[0].id if references else "")
    form = form.model_copy(update={"reference_model_id": reference_id})
    return render(request, "model_new.html", {
        "form": form, "references": references, "errors": errors or {}, "error": error,
        "estimate": await creation_estimate(session, user, settings, reference_id, form.image_count),
        "operation": "model_creation", "max_images": custom_models.MAX_TRAINING_IMAGES,
        "max_mib": custom_models.MAX_TRAINING_IMAGE_BYTES // 2**20, "steps_range": custom_models.STEPS_RANGE,
    }, status_code=status_code)


@router.get("/new")
async def new_model_page(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUserDep,
    reference_model_id: Annotated[str, Query(alias="referenceModelId", max_length=100)] = "",
) -> Response:
    return await _new_page(request, session, settings, user, CreateModelForm(reference_model_id=reference_model_id))


@router.get("/estimate")
async def creation_estimate_partial(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUserDep,
    reference_model_id: Annotated[str, Query(alias="referenceModelId", max_length=100)] = "",
    image_count: Annotated[int, Query(alias="imageCount", ge=0, le=10_000)] = 0,
) -> Response:
    """The estimate beside the new-model form, for the reference model and number of images chosen."""
    estimate = await creation_estimate(session, user, settings, reference_model_id, image_count)
    return render(request, "estimate.html", {"estimate": estimate, "operation": "model_creation"})


@router.post("", dependencies=SPENDS)
async def create_model(
    request: Request, session: SessionDep, settings: SettingsDep, storage: StorageDep, events: JobEventsDep,
    user: CurrentUserDep,
) -> Response:
    """Multipart: the fields of ``CreateModelForm`` and the files ``trainingImages`` (kept in
    spooled temporary files, closed after the request). Success: 303 to the model's page."""
    async with request.form() as data:
        fields: dict[str, Any] = {k: v for k, v in data.multi_items() if not isinstance(v, UploadFile)}
        try:
            form = CreateModelForm.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        images = [custom_models.TrainingImage(f.filename or "image", f.file)
                  for f in data.getlist("trainingImages") if isinstance(f, UploadFile) and f.filename]
        if not form.name.strip():
            return await _new_page(request, session, settings, user, form, status_code=422,
                                   errors={"name": "Give the model a name."})
        try:
            model, _ = await custom_models.create_model(
                session, user.principal, reference_model_id=form.reference_model_id, name=form.name.strip(),
                description=form.description.strip(), trigger_word=form.trigger_word.strip() or None,
                training_steps=form.training_steps, images=images, storage=storage, settings=settings,
                pricing=await current_pricing(session),
            )
        except PixelmintError as exc:
            await session.rollback()  # nothing of a refused model stays
            field = {"trainingImages": "trainingImages", "trainingSteps": "trainingSteps"}.get(
                str(exc.extra.get("field")), "")
            return await _new_page(
                request, session, settings, user, form.model_copy(update={"image_count": len(images)}),
                errors={field: exc.message} if field else None, error=None if field else explain(exc),
                status_code=exc.status_code,
            )
    await session.commit()  # the reservation and the job, before the workers are woken
    events.announce_jobs_available()
    return RedirectResponse(f"/app/models/{model.id}", status_code=303)


# --------------------------------------------------------------------------------------------
# One model


async def _model_context(
    session: AsyncSession, user: CurrentUserDep, settings: Settings, urls: UrlSigner, model_id: uuid.UUID,
) -> dict[str, Any]:
    """The model, its versions (each with a sample image generated from it, if any), its jobs
    still queued or running, and what the next refinement costs."""
    model = await custom_models.get_model(session, user.principal, model_id)
    versions = await custom_models.versions(session, model.id)
    recent = await jobs.list_jobs(session, user.principal, model_id=str(model.id), limit=50)
    active = [j for j in recent if j.state in ACTIVE and j.type != "image_generation"]
    generated = [j for j in recent if j.type == "image_generation" and j.state == "succeeded"]
    samples: dict[int, Any] = {}
    for job in await present_jobs(session, generated, urls):
        if job.images and job.custom_model_version not in samples:
            samples[job.custom_model_version] = job.images[0]  # type: ignore[index]
    refine_cost = None
    if model.status == "ready":
        refine_cost = await pricing.estimate(
            session, user.principal, operation="model_refinement", reference_model_id=None, custom_model_id=model.id,
            resolution="", quality="standard", num_images=1, training_images=0, iteration=None, settings=settings,
        )
    available = await available_credits(session, user.principal)
    return {
        "model": model, "versions": list(reversed(versions)), "samples": samples, "active": active,
        "busy": model.status in ("pending", "training") or bool(active), "poll_seconds": POLL_SECONDS,
        "refine": Estimate(refine_cost, available, user.principal.plan_max_concurrent_jobs == 0),
        "placeholder": placeholder_images(settings) and bool(samples), "prompt": "", "errors": {}, "error": None,
    }


@router.get("/{model_id}")
async def model_page(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, user: CurrentUserDep,
    model_id: uuid.UUID,
) -> Response:
    """The model; htmx (polling while it trains or refines) gets the ``live`` block alone."""
    context = await _model_context(session, user, settings, urls, model_id)
    return render(request, "model.html", context, block="live")


@router.post("/{model_id}/refine", dependencies=SPENDS)
async def refine_model(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, events: JobEventsDep,
    user: CurrentUserDep, model_id: uuid.UUID, form: Annotated[RefineForm, Form()],
) -> Response:
    """Queue a refinement (the next version). Success: 303 to the model's page (htmx: its ``live``
    block, polling until the version is made); a refusal: the page with the reason."""
    try:
        await custom_models.refine_model(
            session, user.principal, model_id, prompt=form.prompt, settings=settings,
            pricing=await current_pricing(session),
        )
    except PixelmintError as exc:
        await session.rollback()
        context = await _model_context(session, user, settings, urls, model_id)
        field = exc.extra.get("field") == "prompt"
        context.update(prompt=form.prompt, errors={"prompt": exc.message} if field else {},
                       error=None if field else explain(exc))
        return render(request, "model.html", context, block="live",
                      status_code=200 if is_htmx(request) else exc.status_code)
    await session.commit()
    events.announce_jobs_available()
    if is_htmx(request):
        return render(request, "model.html", await _model_context(session, user, settings, urls, model_id),
                      block="live")
    return RedirectResponse(f"/app/models/{model_id}", status_code=303)


@router.post("/{model_id}/rename")
async def rename_model(
    session: SessionDep, user: CurrentUserDep, model_id: uuid.UUID, form: Annotated[RenameForm, Form()],
) -> Response:
    """New name (an empty one keeps the old) and description."""
    await custom_models.update_model(
        session, user.principal, model_id, name=form.name.strip() or None, description=form.description.strip(),
    )
    return RedirectResponse(f"/app/models/{model_id}", status_code=303)


@router.get("/{model_id}/delete")
async def confirm_delete_page(request: Request, session: SessionDep, user: CurrentUserDep, model_id: uuid.UUID) -> Response:
    """The confirmation step (a page: it works without JavaScript)."""
    model: CustomModel = await custom_models.get_model(session, user.principal, model_id)
    return render(request, "model_delete.html", {"model": model})


@router.post("/{model_id}/delete")
async def delete_model(session: SessionDep, user: CurrentUserDep, model_id: uuid.UUID) -> Response:
    """Soft delete (as ``DELETE /api/v1/models/{id}``): the model can no longer be used; its images stay."""
    await custom_models.delete_model(session, user.principal, model_id)
    return RedirectResponse("/app/models", status_code=303)
