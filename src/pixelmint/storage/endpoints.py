"""``/api/v1/images`` and the signed ``/files/...`` URLs of the local backend."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse

from pixelmint.api.deps import PrincipalDep, RuntimeDep, SessionDep, base_url
from pixelmint.kit.errors import NotFound
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.storage import service
from pixelmint.storage.backend import LocalStorage
from pixelmint.storage.schemas import ImageOut, ImagePage, present_image

router = APIRouter(prefix="/api/v1/images", tags=["images"])
files_router = APIRouter(tags=["files"])


@router.get("", response_model=ImagePage, summary="The team's images, newest first")
async def list_images(
    principal: PrincipalDep,
    session: SessionDep,
    runtime: RuntimeDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    job_id: Annotated[uuid.UUID | None, Query(alias="jobId")] = None,
) -> ImagePage:
    after = None
    if cursor:
        after = tuple(decode_cursor(cursor, timestamp, uuid.UUID))
    rows = await service.list_images(session, principal.team_id, limit=limit + 1, after=after, job_id=job_id)
    page = rows[:limit]
    url_base, ttl = base_url(request, runtime), runtime.settings.signed_url_ttl_seconds
    return ImagePage(
        items=[present_image(i, runtime.storage, base_url=url_base, ttl_seconds=ttl) for i in page],
        next_cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None,
    )


@router.get("/{image_id}", response_model=ImageOut, summary="One image with a fresh signed URL")
async def get_image(
    image_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> ImageOut:
    image = await service.get_image(session, principal.team_id, image_id)
    return present_image(
        image, runtime.storage, base_url=base_url(request, runtime), ttl_seconds=runtime.settings.signed_url_ttl_seconds
    )


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an image")
async def delete_image(image_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep) -> Response:
    image = await service.get_image(session, principal.team_id, image_id)
    await service.mark_deleted(session, image)
    await session.commit()
    await runtime.storage.delete(image.storage_key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@files_router.get("/files/{key:path}", include_in_schema=False)
async def serve_file(key: str, expires: int, signature: str, runtime: RuntimeDep) -> FileResponse:
    if not isinstance(runtime.storage, LocalStorage):  # S3 URLs point at the bucket or the CDN
        raise NotFound("No such file.", code="file_not_found")
    path = runtime.storage.verified_path(key, expires=expires, signature=signature)
    return FileResponse(path, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})
