"""Who is signed in to the dashboard: the session cookie, as request dependencies.

``CurrentUserDep`` is the signed-in person (``accounts.people.SignedIn``; pages without one
redirect to ``/login``); ``WebPrincipalDep`` is their ``Principal``, the caller the domain
services take, exactly as ``accounts/auth.PrincipalDep`` is for API keys (with ``api_key_id``
None), so a page calls the same service as the JSON endpoint. ``ManagerDep``: an owner or admin
(others get 403).

The cookie (``pixelmint_session``) holds an opaque random token; PostgreSQL holds its SHA-256
(``accounts/people.py``). HttpOnly, SameSite=Lax, Path=/, Secure when the request came over
https or ``PIXELMINT_PUBLIC_URL`` is https.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from pixelmint.accounts.people import SignedIn, signed_in
from pixelmint.accounts.service import Principal
from pixelmint.kit.http import SessionDep, SettingsDep
from pixelmint.settings import Settings
from pixelmint.web.routing import SignInRequired

COOKIE = "pixelmint_session"


async def maybe_user(request: Request, session: SessionDep) -> SignedIn | None:
    """The signed-in person, or None (also kept on ``request.state.web_user`` for the templates)."""
    user = await signed_in(session, request.cookies.get(COOKIE))
    request.state.web_user = user
    return user


MaybeUserDep = Annotated[SignedIn | None, Depends(maybe_user)]


async def current_user(user: MaybeUserDep) -> SignedIn:
    if user is None:
        raise SignInRequired("Sign in to see this page.")
    return user


CurrentUserDep = Annotated[SignedIn, Depends(current_user)]


async def web_principal(user: CurrentUserDep) -> Principal:
    return user.principal


WebPrincipalDep = Annotated[Principal, Depends(web_principal)]


async def manager(user: CurrentUserDep) -> SignedIn:
    from pixelmint.accounts.errors import RoleForbidden

    if not user.manages:
        raise RoleForbidden("Only the team's owners and admins can open this page.")
    return user


ManagerDep = Annotated[SignedIn, Depends(manager)]


def secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or (settings.public_url or "").startswith("https://")


def set_session_cookie(response: Response, request: Request, settings: SettingsDep, token: str) -> None:
    response.set_cookie(
        COOKIE, token, max_age=int(settings.web_session_days * 86400), path="/", httponly=True, samesite="lax",
        secure=secure(request, settings),
    )


def clear_session_cookie(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=secure(request, settings))
