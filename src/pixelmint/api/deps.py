"""Request dependencies: the runtime, a database session, and the authenticated caller.

The session is opened per request and closed (rolled back unless committed) afterwards; endpoints
that write commit explicitly, so that the commit happens before the answer is sent.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal, authenticate
from pixelmint.api.runtime import Runtime
from pixelmint.kit.errors import Forbidden, Unauthorized


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.db.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <apiKey>")


async def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await authenticate(session, credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_admin(
    runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Admin endpoints take ``Authorization: Bearer <PIXELMINT_ADMIN_TOKEN>``; without that setting
    they are disabled (403)."""
    token = runtime.settings.admin_token
    if not token:
        raise Forbidden("Admin API is disabled: set PIXELMINT_ADMIN_TOKEN.", code="admin_disabled")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise Unauthorized("Invalid admin token.", code="invalid_admin_token")


AdminDep = Annotated[None, Depends(require_admin)]


def base_url(request: Request, runtime: Runtime) -> str:
    """Where image URLs point: the configured public URL, else the URL this request came to."""
    return runtime.settings.public_url or str(request.base_url)
