"""``/openai/v1``: OpenAI's Images API for the official SDKs (``openai`` 3.x:
``OpenAI(base_url="http://host/openai/v1", api_key=<Pixelmint API key>)``).

Errors are OpenAI's envelope (``errors.OpenAIRoute``). The routes are left out of Pixelmint's own
OpenAPI schema, whose ``Error`` body they do not use; OpenAI's ``openapi.yaml`` describes them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pixelmint.accounts.auth import IdempotencyDep, PrincipalDep, rate_limit
from pixelmint.compat.openai_images import service
from pixelmint.compat.openai_images.errors import OpenAIRoute, UnknownUrl
from pixelmint.compat.openai_images.schemas import ImageGenerationRequest, ImagesResponse, ModelList, ModelObject
from pixelmint.credits.pricing import current_pricing
from pixelmint.flows import generation
from pixelmint.jobs.deps import JobEventsDep, ProvidersDep
from pixelmint.kit.http import DatabaseDep, SessionDep, SettingsDep
from pixelmint.storage.deps import StorageDep, UrlSignerDep

router = APIRouter(prefix="/openai/v1", route_class=OpenAIRoute, include_in_schema=False)


@router.post("/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             dependencies=[rate_limit("generate")])
async def create_image(
    body: ImageGenerationRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep,
    db: DatabaseDep, events: JobEventsDep, providers: ProvidersDep, storage: StorageDep, urls: UrlSignerDep,
    idempotency: IdempotencyDep,
) -> ImagesResponse:
    """Generate images through the native flow (price, free generation or reservation, queue) and
    wait for them, up to ``PIXELMINT_WAIT_FOR_RESULT_TIMEOUT_SECONDS``. ``Idempotency-Key`` is
    honoured (the SDK sends one only when asked: ``extra_headers``); its answer is stored once
    rendered. Errors: see ``errors.py``."""
    request = await service.generate_request(session, principal, body, settings)
    job, free_left = await generation.submit_generation(
        session, principal, request, settings=settings, pricing=await current_pricing(session)
    )
    await session.commit()  # reserved and queued before the workers are woken and waited for
    events.announce_jobs_available()
    job = await service.wait_for_images(db, events, providers, principal, job,
                                        timeout=settings.wait_for_result_timeout_seconds)
    return await service.images_response(session, job, b64=body.response_format == "b64_json", storage=storage,
                                         urls=urls, free_left=free_left)


@router.get("/models", response_model=ModelList)
async def list_models(principal: PrincipalDep, session: SessionDep) -> ModelList:
    """The models this key may use: the active catalog as ``pixelmint/<id>``, then the team's
    ready custom models as ``<teamId>/<customModelId>``. Not paginated, as OpenAI's."""
    return ModelList(data=await service.list_models(session, principal))


@router.get("/models/{model:path}", response_model=ModelObject)
async def retrieve_model(model: str, principal: PrincipalDep, session: SessionDep) -> ModelObject:
    """One model by any name a generation takes (the SDK percent-encodes the ``/`` of a name; the
    server decodes it). 404 ``model_not_found`` for one this key cannot use."""
    return await service.get_model(session, principal, model)


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def unknown_url(request: Request) -> JSONResponse:
    """Any other path under ``/openai/v1``: OpenAI's 404, in its envelope."""
    raise UnknownUrl(f"Invalid URL ({request.method} {request.url.path}).")
