"""``/api/v1/images`` and the signed ``/files/...`` URLs of the local backend."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse

from pixelmint.accounts.auth import PrincipalDep
from pixelmint.kit.errors import responses
from pixelmint.kit.http import SessionDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.storage import service
from pixelmint.storage.backend import LocalStorage
from pixelmint.storage.deps import StorageDep, UrlSignerDep
from pixelmint.storage.errors import FileNotFound, ImageNotFound
from pixelmint.storage.schemas import ImageOut, ImagePage, present_image

router = APIRouter(prefix="/api/v1/images", tags=["images"])
files_router = APIRouter(tags=["files"])


@router.get("", response_model=ImagePage, summary="The team's images, newest first")
async def list_images(
    principal: PrincipalDep,
    session: SessionDep,
    urls: UrlSignerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    job_id: Annotated[uuid.UUID | None, Query(alias="jobId")] = None,
    favorite: Annotated[bool | None, Query(description="true: only favourites; false: only the others")] = None,
) -> ImagePage:
    after = None
    if cursor:
        after = tuple(decode_cursor(cursor, timestamp, uuid.UUID))
    rows = await service.list_images(
        session, principal.team_id, limit=limit + 1, after=after, job_id=job_id, favorite=favorite
    )
    page = rows[:limit]
    return ImagePage(
        items=[present_image(i, urls) for i in page],
        next_cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None,
    )


@router.get("/{image_id}", response_model=ImageOut, summary="One image with a fresh signed URL")
async def get_image(image_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> ImageOut:
    return present_image(await service.get_image(session, principal.team_id, image_id), urls)


@router.post("/{image_id}/favorite", response_model=ImageOut, responses=responses(ImageNotFound),
             summary="Star an image (idempotent)")
async def favorite_image(image_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> ImageOut:
    return present_image(await service.set_favorite(session, principal.team_id, image_id, True), urls)


@router.delete("/{image_id}/favorite", response_model=ImageOut, responses=responses(ImageNotFound),
               summary="Unstar an image (idempotent)")
async def unfavorite_image(image_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> ImageOut:
    return present_image(await service.set_favorite(session, principal.team_id, image_id, False), urls)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an image")
async def delete_image(image_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, storage: StorageDep) -> Response:
    image = await service.get_image(session, principal.team_id, image_id)
    await service.mark_deleted(session, image)
    await session.commit()  # the row first: a failed commit must not leave the row without its object
    await storage.delete(image.storage_key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@files_router.get("/files/{key:path}", include_in_schema=False)
async def serve_file(key: str, expires: int, signature: str, storage: StorageDep) -> FileResponse:
    if not isinstance(storage, LocalStorage):  # S3 URLs point at the bucket or the CDN
        raise FileNotFound("No such file.")
    path = storage.verified_path(key, expires=expires, signature=signature)
    return FileResponse(path, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})
