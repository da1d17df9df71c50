"""API keys (owners and admins): create with a name (the key shown once), list, revoke."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.accounts import service as accounts
from pixelmint.kit.http import SessionDep
from pixelmint.web.auth import ManagerDep
from pixelmint.web.forms import KeyForm
from pixelmint.web.routing import web_router
from pixelmint.web.templating import is_htmx, render

router = web_router(prefix="/app/keys")


async def _page(request: Request, session: SessionDep, user: ManagerDep, *, new_key: str | None = None,
                status_code: int = 200) -> Response:
    keys = await accounts.list_api_keys(session, user.team_id)
    return render(request, "keys.html", {"keys": keys, "new_key": new_key}, block="keys", status_code=status_code)


@router.get("")
async def keys_page(request: Request, session: SessionDep, user: ManagerDep) -> Response:
    return await _page(request, session, user)


@router.post("")
async def create_key(
    request: Request, session: SessionDep, user: ManagerDep, form: Annotated[KeyForm, Form()],
) -> Response:
    """A new key, shown in this answer only (not a redirect: the key is never stored in clear)."""
    _, key = await accounts.create_api_key(session, team_id=user.team_id, user_id=user.user_id, name=form.name.strip())
    return await _page(request, session, user, new_key=key, status_code=201)


@router.post("/{key_id}/revoke")
async def revoke_key(request: Request, session: SessionDep, user: ManagerDep, key_id: uuid.UUID) -> Response:
    """Revoke one of the team's keys (404 for another team's)."""
    await accounts.revoke_api_key(session, team_id=user.team_id, key_id=key_id)
    if is_htmx(request):
        return await _page(request, session, user)
    return RedirectResponse("/app/keys", status_code=303)
