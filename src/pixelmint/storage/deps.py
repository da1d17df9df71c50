"""The storage backend and the request's URL signer, as request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pixelmint.kit.http import SettingsDep, base_url, from_runtime
from pixelmint.storage.backend import Storage
from pixelmint.storage.schemas import UrlSigner

StorageDep = Annotated[Storage, from_runtime("storage")]


async def url_signer(request: Request, settings: SettingsDep, storage: StorageDep) -> UrlSigner:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread (kit/http.from_runtime)
    return UrlSigner(storage, base_url(request, settings), settings.signed_url_ttl_seconds)


UrlSignerDep = Annotated[UrlSigner, Depends(url_signer)]
