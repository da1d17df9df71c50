"""The gallery: every image of the team, newest first, with filters (model, job, favourites,
dates), the favourite star, download, delete (after a confirmation page, so it works without
JavaScript) and an image's page with its generation parameters read from the PNG itself.

"Use prompt / seed / all" links lead to the generate page prefilled
(``/app/generate?prompt=&seed=&referenceModelId=&customModelId=&version=``).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.storage import service as images
from pixelmint.storage.backend import StorageError
from pixelmint.storage.deps import StorageDep, UrlSignerDep
from pixelmint.storage.metadata import read_png_metadata
from pixelmint.storage.schemas import present_image
from pixelmint.storage.tables import Image
from pixelmint.web.auth import CurrentUserDep
from pixelmint.web.forms import FavoriteForm
from pixelmint.web.paging import Filters, day_range, safe_back, with_query
from pixelmint.web.routing import web_router
from pixelmint.web.spending import placeholder_images
from pixelmint.web.templating import is_htmx, render

router = web_router(prefix="/app/gallery")

PAGE_SIZE = 24
CUSTOM_KEY = re.compile(r"^custom:([0-9a-f-]{36}):v(\d+)$")


def model_label(key: str | None) -> str:
    """``params.modelKey`` in words: a reference model id, or ``custom model 1a2b3c4d v2``."""
    if not key:
        return "–"
    match = CUSTOM_KEY.match(key)
    return f"custom model {match[1][:8]} v{match[2]}" if match else key


def generate_links(params: dict[str, Any]) -> dict[str, str]:
    """Links to the generate page: ``prompt`` (the prompt alone), ``seed`` (the seed alone) and
    ``all`` (prompt, seed and the model with its version)."""
    model: dict[str, str] = {}
    match = CUSTOM_KEY.match(str(params.get("modelKey") or ""))
    if match:
        model = {"customModelId": match[1], "version": match[2]}
    elif params.get("modelKey"):
        model = {"referenceModelId": str(params["modelKey"])}
    prompt = {"prompt": str(params.get("prompt") or "")}
    seed = {"seed": str(params["seed"])} if params.get("seed") is not None else {}
    return {
        "prompt": "/app/generate?" + urlencode(prompt | model),
        "seed": "/app/generate?" + urlencode(seed | model),
        "all": "/app/generate?" + urlencode(prompt | seed | model),
    }


def _context(settings: SettingsDep) -> dict[str, Any]:
    return {"placeholder": placeholder_images(settings), "model_label": model_label}


@router.get("")
async def gallery(
    request: Request, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep, user: CurrentUserDep,
    model: str = "", job: str = "", favorites: str = "", since: str = "", until: str = "",
    cursor: str = "",
) -> Response:
    """``?model=<modelKey>&job=<job id>&favorites=1&since=YYYY-MM-DD&until=YYYY-MM-DD`` (days in UTC,
    both inclusive), 24 images a page (``cursor``)."""
    filters = Filters()
    job_id = filters.uuid("job", job)
    start, end = day_range(filters.day("since", since), filters.day("until", until))
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await images.list_images(
        session, user.team_id, limit=PAGE_SIZE + 1, after=after, job_id=job_id, favorite=True if favorites else None,
        model_key=model or None, since=start, until=end,
    )
    page = rows[:PAGE_SIZE]
    next_link = None
    if len(rows) > PAGE_SIZE:
        next_link = with_query(request, cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)))
    here = with_query(request)
    return render(request, "gallery.html", {
        **_context(settings), "images": [present_image(i, urls) for i in page], "models": await images.model_keys(
            session, user.team_id), "filters": {"model": model, "job": job, "favorites": favorites, "since": since,
                                               "until": until}, "errors": filters.errors, "next_link": next_link,
        "first_link": with_query(request, cursor=None) if cursor else None, "here": here,
    })


async def _stored(storage: StorageDep, image: Image) -> bytes | None:
    try:
        return await storage.get(image.storage_key)
    except StorageError:
        return None


@router.get("/{image_id}")
async def image_page(
    request: Request, image_id: uuid.UUID, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep,
    storage: StorageDep, user: CurrentUserDep, back: str = "/app/gallery",
) -> Response:
    """One image beside its parameters: the PNG's own text chunks (``storage/metadata.py``) and the
    parameters the job recorded."""
    image = await images.get_image(session, user.team_id, image_id)
    data = await _stored(storage, image)
    metadata = read_png_metadata(data) if data is not None else None
    return render(request, "image.html", {
        **_context(settings), "item": present_image(image, urls), "metadata": metadata,
        "links": generate_links(image.params), "back": safe_back(back, "/app/gallery"),
        "here": f"/app/gallery/{image.id}",
    })


@router.post("/{image_id}/favorite")
async def favorite(
    request: Request, image_id: uuid.UUID, session: SessionDep, urls: UrlSignerDep, user: CurrentUserDep,
    form: Annotated[FavoriteForm, Form()],
) -> Response:
    """Star (``favorite=true``) or unstar an image. htmx gets the new star; a plain form goes back
    to ``next``."""
    image = await images.set_favorite(session, user.team_id, image_id, form.favorite)
    back = safe_back(form.next, "/app/gallery")
    if is_htmx(request):
        return render(request, "gallery.html", {"item": present_image(image, urls), "here": back}, block="star")
    return RedirectResponse(back, status_code=303)


@router.get("/{image_id}/download")
async def download(image_id: uuid.UUID, session: SessionDep, storage: StorageDep, user: CurrentUserDep) -> Response:
    """The PNG as an attachment, ``pixelmint-<seed>-<id>.png``."""
    image = await images.get_image(session, user.team_id, image_id)
    data = await storage.get(image.storage_key)
    extension = "png" if image.content_type == "image/png" else image.content_type.rsplit("/", 1)[-1]
    return Response(data, media_type=image.content_type, headers={
        "Content-Disposition": f'attachment; filename="pixelmint-{image.seed}-{image.id.hex[-8:]}.{extension}"',
        "Cache-Control": "private, no-store",
    })


@router.get("/{image_id}/delete")
async def confirm_delete(
    request: Request, image_id: uuid.UUID, session: SessionDep, settings: SettingsDep, urls: UrlSignerDep,
    user: CurrentUserDep,
) -> Response:
    """The confirmation page (a plain page, so deleting works without JavaScript)."""
    image = await images.get_image(session, user.team_id, image_id)
    return render(request, "image_delete.html", {**_context(settings), "item": present_image(image, urls)})


@router.post("/{image_id}/delete")
async def delete(image_id: uuid.UUID, session: SessionDep, storage: StorageDep, user: CurrentUserDep) -> Response:
    """Delete as ``DELETE /api/v1/images/{id}`` does: the row first (committed), then the object."""
    image = await images.get_image(session, user.team_id, image_id)
    await images.mark_deleted(session, image)
    await session.commit()
    await storage.delete(image.storage_key)
    return RedirectResponse("/app/gallery?deleted=1", status_code=303)
