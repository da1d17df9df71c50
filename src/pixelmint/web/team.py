"""The team: members and their roles, invites by link, and sign-in sessions.

Everyone sees the members and their own sessions. Owners and admins also invite (the link is
shown once, to them: no mail is sent), change roles, remove members and see and revoke every
session of the team; only an owner grants, changes or removes the owner role.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.accounts import people
from pixelmint.accounts.tables import ROLES
from pixelmint.kit.http import SessionDep, SettingsDep, base_url
from pixelmint.web.auth import CurrentUserDep
from pixelmint.web.forms import RoleForm
from pixelmint.web.routing import web_router
from pixelmint.web.templating import render

router = web_router(prefix="/app/team")

RoleDep = Annotated[RoleForm, Form()]


async def _page(
    request: Request, session: SessionDep, user: CurrentUserDep, *, invite_link: str | None = None,
    status_code: int = 200,
) -> Response:
    members = await people.list_members(session, user.team_id)
    invites = await people.list_invites(session, user.team_id) if user.manages else []
    sessions = await people.list_sessions(session, team_id=user.team_id,
                                          user_id=None if user.manages else user.user_id)
    return render(request, "team.html", {
        "members": members, "invites": invites, "sessions": sessions, "roles": ROLES,
        "invite_link": invite_link,
    }, status_code=status_code)


@router.get("")
async def team_page(request: Request, session: SessionDep, user: CurrentUserDep) -> Response:
    return await _page(request, session, user)


@router.post("/invites")
async def invite(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUserDep, form: RoleDep,
) -> Response:
    """A new invite link, shown in this answer only."""
    _, token = await people.create_invite(
        session, team_id=user.team_id, actor_id=user.user_id, actor_role=user.role, role=form.role,
        lifetime=dt.timedelta(days=settings.invite_days),
    )
    link = f"{base_url(request, settings).rstrip('/')}/invite?token={token}"
    return await _page(request, session, user, invite_link=link, status_code=201)


@router.post("/invites/{invite_id}/revoke")
async def revoke_invite(session: SessionDep, user: CurrentUserDep, invite_id: uuid.UUID) -> Response:
    await people.revoke_invite(session, team_id=user.team_id, actor_role=user.role, invite_id=invite_id)
    return RedirectResponse("/app/team", status_code=303)


@router.post("/members/{member_id}/role")
async def change_role(session: SessionDep, user: CurrentUserDep, member_id: uuid.UUID, form: RoleDep) -> Response:
    await people.change_role(session, team_id=user.team_id, actor_role=user.role, member_id=member_id,
                             role=form.role)
    return RedirectResponse("/app/team", status_code=303)


@router.post("/members/{member_id}/remove")
async def remove_member(session: SessionDep, user: CurrentUserDep, member_id: uuid.UUID) -> Response:
    await people.remove_member(session, team_id=user.team_id, actor_role=user.role, member_id=member_id)
    return RedirectResponse("/app/team", status_code=303)


@router.post("/sessions/{session_id}/revoke")
async def revoke_session(session: SessionDep, user: CurrentUserDep, session_id: uuid.UUID) -> Response:
    """Revoke a sign-in (one's own; owners and admins: anyone's in the team)."""
    await people.revoke_session(session, team_id=user.team_id, session_id=session_id,
                                user_id=None if user.manages else user.user_id)
    return RedirectResponse("/app" if session_id != user.session_id else "/login", status_code=303)
