"""Generate: the form (model and version, prompt, negative prompt, resolution presets, quality,
number of images, seed) with a live cost estimate and the free generations left, and the queue
panel of the team's recent generations, each queued or running one updated live by server-sent
events until it is done, with its images (signed URLs, as the JSON API presents them) and a
cancel button.

Submitting runs ``flows.generation.submit_generation``, as ``POST /api/v1/generate``; the estimate
is ``flows.pricing.estimate``, as ``POST /api/v1/credits/estimate``. Links may prefill the form:
``?referenceModelId=`` or ``?customModelId=&version=``, and ``prompt``, ``negativePrompt``,
``seed``, ``resolution``, ``quality``, ``numImages`` (the gallery's "use prompt / seed / all").

Without JavaScript the form posts and redirects back here, and the queue panel is a list with a
refresh link.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from pixelmint.accounts import service as accounts
from pixelmint.credits.pricing import current_pricing
from pixelmint.custom_models import service as custom_models
from pixelmint.flows import generation, pricing
from pixelmint.jobs import service as jobs
from pixelmint.jobs.deps import JobEventsDep, ProvidersDep
from pixelmint.jobs.errors import InvalidSeed, JobFinished, ModelRequired
from pixelmint.jobs.events import watch_job
from pixelmint.jobs.presenters import present_jobs
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.schemas import GenerateRequest, JobOut
from pixelmint.kit.errors import PixelmintError
from pixelmint.kit.http import DatabaseDep, SessionDep, SettingsDep, rate_limit
from pixelmint.settings import Settings
from pixelmint.storage.deps import UrlSignerDep
from pixelmint.storage.schemas import UrlSigner
from pixelmint.web.auth import CurrentUserDep, web_principal
from pixelmint.web.forms import GenerateForm
from pixelmint.web.models import reference_models
from pixelmint.web.routing import web_router
from pixelmint.web.spending import Estimate, available_credits, explain, placeholder_images
from pixelmint.web.templating import is_htmx, render, templates

router = web_router(prefix="/app/generate")

QUEUE_SIZE = 8
# Queued or running jobs in the panel that get a live stream each (a browser opens at most six
# connections to a host over HTTP/1.1; the others show a refresh link).
LIVE_LIMIT = 3
# Progress is not announced by NOTIFY (only state changes are): a live stream re-reads its job this
# often (seconds) to show it. A stream ends after PIXELMINT_EVENT_STREAM_MAX_SECONDS; the browser reconnects.
PROGRESS_SECONDS = 1.0

# (value, label): multiples of 8 within the default 64..2048 limits.
RESOLUTIONS = (
    ("512x512", "512 × 512 · square, small"),
    ("768x768", "768 × 768 · square"),
    ("1024x1024", "1024 × 1024 · square"),
    ("1024x768", "1024 × 768 · landscape 4:3"),
    ("768x1024", "768 × 1024 · portrait 3:4"),
    ("1216x832", "1216 × 832 · landscape 3:2"),
    ("832x1216", "832 × 1216 · portrait 2:3"),
    ("1344x768", "1344 × 768 · wide 16:9"),
    ("768x1344", "768 × 1344 · tall 9:16"),
    ("2048x2048", "2048 × 2048 · square, large"),
)


@dataclass(frozen=True)
class ModelChoice:
    value: str  # "ref:<id>" or "custom:<uuid>:<version>"
    label: str
    group: str


def parse_choice(value: str) -> tuple[str | None, uuid.UUID | None, int | None]:
    """``"ref:<id>"`` → (id, None, None); ``"custom:<uuid>:<version>"`` → (None, uuid, version).
    Raises ``InvalidRequest`` (model_required) for anything else."""
    kind, _, rest = value.partition(":")
    try:
        if kind == "ref" and rest:
            return rest, None, None
        if kind == "custom":
            model_id, _, version = rest.partition(":")
            return None, uuid.UUID(model_id), int(version) if version else None
    except ValueError:
        pass
    raise ModelRequired("Pick a model to generate from.", field="model")


async def model_choices(session: AsyncSession, user: CurrentUserDep) -> list[ModelChoice]:
    """The team's ready custom models, each version (latest first), then the catalog by category."""
    choices = []
    for model in await custom_models.list_models(session, user.principal, status="ready", limit=100, after=None):
        for version in range(model.version, 0, -1):
            latest = " (latest)" if version == model.version else ""
            choices.append(ModelChoice(f"custom:{model.id}:{version}", f"{model.name} · v{version}{latest}", "Your models"))
    for reference in sorted(await reference_models(session), key=lambda r: (r.category, r.name)):
        choices.append(ModelChoice(f"ref:{reference.id}", reference.name, f"Catalog · {reference.category}"))
    return choices


def default_choice(choices: list[ModelChoice], reference_model_id: str, custom_model_id: str, version: int | None) -> str:
    """The option a link asked for (a custom model without a version: its latest), else the first."""
    wanted: str | None = None
    if custom_model_id:
        prefix = f"custom:{custom_model_id}:"
        matching = [c.value for c in choices if c.value.startswith(prefix)]
        if version and f"{prefix}{version}" in matching:
            wanted = f"{prefix}{version}"
        elif matching:
            wanted = matching[0]
    elif reference_model_id:
        wanted = f"ref:{reference_model_id}"
    values = [c.value for c in choices]
    return wanted if wanted in values else (values[0] if values else "")


async def generation_estimate(
    session: AsyncSession, user: CurrentUserDep, settings: Settings, form: GenerateForm,
) -> Estimate:
    """What the generation would reserve now, beside the team's credits and the person's free
    generations (a free one costs nothing)."""
    available = await available_credits(session, user.principal)
    free_left = (await accounts.get_user(session, user.user_id)).free_generations_remaining
    free_plan = user.principal.plan_max_concurrent_jobs == 0
    try:
        reference_id, custom_id, _ = parse_choice(form.model)
        cost = await pricing.estimate(
            session, user.principal, operation="image_generation", reference_model_id=reference_id,
            custom_model_id=custom_id, resolution=form.resolution, quality=form.quality, num_images=form.num_images,
            training_images=0, iteration=None, settings=settings,
        )
    except PixelmintError as exc:
        return Estimate(None, available, free_plan, free_left, error=exc.message)
    return Estimate(cost, available, free_plan, free_left)


async def queue_jobs(session: AsyncSession, user: CurrentUserDep, urls: UrlSigner) -> list[JobOut]:
    """The team's most recent generations, newest first, as the JSON API presents them."""
    recent = await jobs.list_jobs(session, user.principal, job_type="image_generation", limit=QUEUE_SIZE)
    return await present_jobs(session, recent, urls)


async def _page(
    request: Request, session: AsyncSession, settings: Settings, urls: UrlSigner, user: CurrentUserDep,
    form: GenerateForm, *, errors: dict[str, str] | None = None, error: str | None = None,
    submitted: uuid.UUID | None = None, status_code: int = 200, choices: list[ModelChoice] | None = None,
) -> Response:
    choices = choices if choices is not None else await model_choices(session, user)
    if not form.model:
        form = form.model_copy(update={"model": choices[0].value if choices else ""})
    queue = await queue_jobs(session, user, urls)
    return render(request, "generate.html", {
        "form": form, "choices": choices, "resolutions": RESOLUTIONS, "max_images": settings.max_images_per_request,
        "estimate": await generation_estimate(session, user, settings, form), "operation": "image_generation",
        "queue": queue, "live_ids": live_ids(queue), "errors": errors or {}, "error": error, "submitted": submitted,
        "placeholder": placeholder_images(settings), "max_prompt": settings.max_prompt_length,
    }, block="workspace", status_code=status_code)


def live_ids(queue: list[JobOut]) -> set[uuid.UUID]:
    """The queued or running jobs of the panel that get a live stream (the newest ``LIVE_LIMIT``)."""
    return {job.id for job in [j for j in queue if j.status not in FINISHED_STATES][:LIVE_LIMIT]}


@router.get("")
async def generate_page(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, user: CurrentUserDep,
    reference_model_id: Annotated[str, Query(alias="referenceModelId", max_length=100)] = "",
    custom_model_id: Annotated[str, Query(alias="customModelId", max_length=100)] = "",
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    prompt: Annotated[str, Query(max_length=10_000)] = "",
    negative_prompt: Annotated[str, Query(alias="negativePrompt", max_length=10_000)] = "",
    seed: Annotated[str, Query(max_length=20)] = "",
    resolution: Annotated[str, Query(max_length=20)] = "1024x1024",
    quality: Annotated[str, Query(max_length=20)] = "standard",
    num_images: Annotated[int, Query(alias="numImages", ge=1, le=100)] = 1,
) -> Response:
    choices = await model_choices(session, user)
    form = GenerateForm(
        model=default_choice(choices, reference_model_id, custom_model_id, version), prompt=prompt,
        negative_prompt=negative_prompt, seed=seed, resolution=resolution,
        quality="hd" if quality == "hd" else "standard", num_images=num_images,
    )
    return await _page(request, session, settings, urls, user, form, choices=choices)


@router.get("/estimate")
async def estimate_partial(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUserDep,
    model: Annotated[str, Query(max_length=200)] = "",
    resolution: Annotated[str, Query(max_length=20)] = "1024x1024",
    quality: Annotated[str, Query(max_length=20)] = "standard",
    num_images: Annotated[int, Query(alias="numImages", ge=0, le=100)] = 1,
) -> Response:
    """The estimate partial for the form's current model, resolution, quality and number of images."""
    form = GenerateForm(model=model, resolution=resolution, quality="hd" if quality == "hd" else "standard",
                        num_images=num_images)
    estimate = await generation_estimate(session, user, settings, form)
    return render(request, "estimate.html", {"estimate": estimate, "operation": "image_generation"})


def generate_request(form: GenerateForm) -> GenerateRequest:
    """The JSON API's request body from the form. Raises ``InvalidRequest`` (model_required,
    invalid_seed) for what the form cannot express."""
    reference_id, custom_id, version = parse_choice(form.model)
    seed = None
    if form.seed.strip():
        if not form.seed.strip().isdigit():
            raise InvalidSeed("The seed is a whole number from 0 to 4294967295, or empty for a random one.", field="seed")
        seed = int(form.seed.strip())
    return GenerateRequest(
        reference_model_id=reference_id, custom_model_id=custom_id, custom_model_version=version, prompt=form.prompt,
        negative_prompt=form.negative_prompt.strip() or None, resolution=form.resolution, quality=form.quality,
        num_images=form.num_images, seed=seed,
    )


FIELDS = {"prompt": "prompt", "negativePrompt": "negativePrompt", "resolution": "resolution",
          "numImages": "numImages", "seed": "seed", "model": "model", "referenceModelId": "model"}


@router.post("", dependencies=[rate_limit("generate", web_principal)])
async def submit(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, events: JobEventsDep,
    user: CurrentUserDep, form: Annotated[GenerateForm, Form()],
) -> Response:
    """Queue the generation. htmx gets the workspace (form and queue, the new job live in it); a
    plain post is redirected back to the page with the same inputs. A refusal re-renders the form
    with the reason beside the field, or in words for credits and plans."""
    try:
        job, _ = await generation.submit_generation(
            session, user.principal, generate_request(form), settings=settings, pricing=await current_pricing(session),
        )
    except PixelmintError as exc:
        await session.rollback()
        field = FIELDS.get(str(exc.extra.get("field")))
        return await _page(
            request, session, settings, urls, user, form, errors={field: exc.message} if field else None,
            error=None if field else explain(exc), status_code=200 if is_htmx(request) else exc.status_code,
        )
    await session.commit()  # the reservation and the job, before the workers are woken
    events.announce_jobs_available()
    if is_htmx(request):
        return await _page(request, session, settings, urls, user, form, submitted=job.id)
    choice = parse_choice(form.model)
    query = {"referenceModelId": choice[0] or "", "customModelId": str(choice[1] or ""), "version": choice[2] or "",
             "prompt": form.prompt, "negativePrompt": form.negative_prompt, "seed": form.seed,
             "resolution": form.resolution, "quality": form.quality, "numImages": form.num_images}
    return RedirectResponse("/app/generate?" + urlencode({k: v for k, v in query.items() if v}) + "#queue",
                            status_code=303)


@router.get("/queue")
async def queue_partial(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, user: CurrentUserDep,
) -> Response:
    """The queue panel alone (its refresh link, with htmx); a plain visit goes to the page."""
    if not is_htmx(request):
        return RedirectResponse("/app/generate#queue", status_code=303)
    queue = await queue_jobs(session, user, urls)
    return render(request, "generate.html", {
        "queue": queue, "live_ids": live_ids(queue), "placeholder": placeholder_images(settings),
        "submitted": None,
    }, block="queue")


def job_card(job: JobOut, csrf_token: str) -> str:
    """The inside of a job's card in the queue panel (``_job.html``), as the live stream sends it."""
    return templates.get_template("_job.html").module.card(job, csrf_token)  # type: ignore[attr-defined]


@router.get("/jobs/{job_id}/events")
async def job_events(
    request: Request, job_id: uuid.UUID, session: SessionDep, db: DatabaseDep, events: JobEventsDep,
    urls: UrlSignerDep, user: CurrentUserDep, settings: SettingsDep,
) -> EventSourceResponse:
    """Server-sent events for one of the team's jobs (htmx-ext-sse): ``event: job`` with the card's
    HTML on each change of state or progress, then ``event: done``. Like
    ``GET /api/v1/jobs/{id}/events``: the request's session checks the job (404 for another team's)
    and is closed before streaming; each read uses a transaction of its own (``watch_job``)."""
    await jobs.get_job(session, user.principal, job_id)
    await session.commit()  # the sign-in's last-seen touch
    await session.close()
    csrf = request.scope.get("csrftoken")
    csrf_token = csrf() if csrf else ""

    async def stream() -> AsyncIterator[dict[str, Any]]:
        last = None
        async with contextlib.aclosing(
            watch_job(db, events, job_id, timeout=settings.event_stream_max_seconds, recheck=PROGRESS_SECONDS)
        ) as updates:
            async for job in updates:
                if job is None:
                    yield {"event": "done", "data": "gone"}
                    return
                seen = (job.state, job.progress, job.cancel_requested_at is not None)
                if seen != last:
                    last = seen
                    async with db.transaction() as s:
                        shown = (await present_jobs(s, [job], urls))[0]
                    yield {"event": "job", "data": job_card(shown, csrf_token)}
                if job.state in FINISHED_STATES:
                    yield {"event": "done", "data": job.state}

    return EventSourceResponse(stream(), ping=15)


@router.post("/jobs/{job_id}/cancel")
async def cancel(
    request: Request, session: SessionDep, providers: ProvidersDep, user: CurrentUserDep, job_id: uuid.UUID,
) -> Response:
    """Cancel a queued or running generation (``DELETE /api/v1/jobs/{id}``): queued ones at once,
    running ones when their worker stops; one that already finished stays as it is. htmx: 204 (the
    live stream shows the change); otherwise back to the queue."""
    try:
        job = await jobs.cancel_job(session, user.principal, job_id)
    except JobFinished:
        await session.rollback()
    else:
        await session.commit()  # canceled and released before the provider hears of it
        await jobs.cancel_at_provider(job, providers)
    if is_htmx(request):
        return Response(status_code=204)
    return RedirectResponse("/app/generate#queue", status_code=303)
