"""The pages anyone may open: the landing page, sign-up, sign-in, sign-out, accepting an invite
and setting a password from a one-time link.

Forms post plainly (no JavaScript needed) and answer with a redirect (303) on success or the form
again with the error beside the field. Sign-in and sign-up count against the ``login`` rate limit
(per client address, and per email for sign-in: ``PIXELMINT_RATE_LIMIT_LOGIN[_TEAM]``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from pixelmint.accounts import people
from pixelmint.accounts import service as accounts
from pixelmint.accounts.errors import EmailTaken, InvalidCredentials, InvalidEmail, WeakPassword
from pixelmint.credits.pricing import current_pricing
from pixelmint.flows import teams
from pixelmint.kit.http import RateLimiterDep, SessionDep, SettingsDep
from pixelmint.kit.ratelimit import RateLimited
from pixelmint.web.auth import COOKIE, MaybeUserDep, clear_session_cookie, set_session_cookie
from pixelmint.web.forms import InviteForm, LoginForm, PasswordForm, SignupForm
from pixelmint.web.paging import safe_back
from pixelmint.web.routing import web_router
from pixelmint.web.templating import render

router = web_router()



def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def too_many(exc: RateLimited) -> str:
    return f"Too many attempts. Try again in {exc.extra.get('retryAfter', 60)} seconds."


async def signed_in_response(
    request: Request, session: SessionDep, settings: SettingsDep, user_id: Any, target: str
) -> Response:
    token = await people.start_session(
        session, user_id=user_id, lifetime=dt.timedelta(days=settings.web_session_days),
        user_agent=request.headers.get("user-agent"),
    )
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, settings, token)
    return response


@router.get("/")
async def landing(request: Request, session: SessionDep, settings: SettingsDep, user: MaybeUserDep) -> Response:
    """What Pixelmint does, the plans (from the plans table, prices from ``PIXELMINT_PLAN_PRICES``)
    and the cost formulas in words (from the pricing table in force)."""
    plans = await accounts.list_plans(session)
    pricing = await current_pricing(session)
    return render(request, "landing.html", {
        "plans": plans, "prices": settings.plan_prices, "pricing": pricing,
        "free_generations": settings.free_generations_per_user, "signup_enabled": settings.signup_enabled,
    })


# --------------------------------------------------------------------------------------------
# Sign-in and sign-out


@router.get("/login")
async def login_page(request: Request, settings: SettingsDep, user: MaybeUserDep, next: str = "/app") -> Response:
    if user is not None:
        return RedirectResponse(safe_back(next, "/app"), status_code=303)
    return render(request, "login.html", {"next": safe_back(next, "/app"), "email": "", "error": None,
                                          "signup_enabled": settings.signup_enabled})


@router.post("/login")
async def login(
    request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep,
    form: Annotated[LoginForm, Form()],
) -> Response:
    """Sign in. A wrong password and an unknown email get the same answer (401, same message)."""
    email, password, next = form.email, form.password, form.next
    context = {"next": safe_back(next, "/app"), "email": email, "signup_enabled": settings.signup_enabled}
    try:
        await limiter.hit("login", team=email.strip().lower() or None, key=client_address(request))
        user = await people.check_credentials(session, email, password)
    except RateLimited as exc:
        return render(request, "login.html", {**context, "error": too_many(exc)}, status_code=429,
                      headers=exc.headers)
    except InvalidCredentials as exc:
        return render(request, "login.html", {**context, "error": exc.message}, status_code=401)
    return await signed_in_response(request, session, settings, user.id, safe_back(next, "/app"))


@router.post("/logout")
async def logout(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Sign out: the session is revoked (not only the cookie cleared)."""
    if token := request.cookies.get(COOKIE):
        await people.end_session(session, token)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(response, request, settings)
    return response


# --------------------------------------------------------------------------------------------
# Sign-up


def _field_errors(exc: InvalidEmail | WeakPassword | EmailTaken) -> dict[str, str]:
    return {str(exc.extra.get("field", "email")): exc.message}


@router.get("/signup")
async def signup_page(request: Request, settings: SettingsDep, user: MaybeUserDep) -> Response:
    if user is not None:
        return RedirectResponse("/app", status_code=303)
    return render(request, "signup.html", {
        "signup_enabled": settings.signup_enabled, "free_generations": settings.free_generations_per_user,
        "form": {"email": "", "name": "", "team": ""}, "errors": {}, "error": None,
    }, status_code=200 if settings.signup_enabled else 403)


@router.post("/signup")
async def signup(
    request: Request, session: SessionDep, settings: SettingsDep, limiter: RateLimiterDep,
    form: Annotated[SignupForm, Form()],
) -> Response:
    """A new team on the free plan with this person as its owner (``flows/teams.create_team``),
    signed in at once. 403 while ``PIXELMINT_SIGNUP_ENABLED`` is off."""
    email, password, name, team = form.email, form.password, form.name, form.team
    context: dict[str, Any] = {
        "signup_enabled": settings.signup_enabled, "free_generations": settings.free_generations_per_user,
        "form": {"email": email, "name": name, "team": team}, "errors": {}, "error": None,
    }
    if not settings.signup_enabled:
        return render(request, "signup.html", context, status_code=403)
    try:
        await limiter.hit("login", team=None, key=client_address(request))
        address = await people.available_email(session, email)
        password_hash = await people.hash_password(password)
    except RateLimited as exc:
        return render(request, "signup.html", {**context, "error": too_many(exc)}, status_code=429,
                      headers=exc.headers)
    except (InvalidEmail, WeakPassword, EmailTaken) as exc:
        return render(request, "signup.html", {**context, "errors": _field_errors(exc)}, status_code=exc.status_code)
    person = name.strip() or address.split("@")[0]
    created = await teams.create_team(
        session, name=team.strip() or f"{person}'s team", plan_code="free", user_name=person, email=address,
        free_generations=settings.free_generations_per_user, password_hash=password_hash, with_api_key=False,
    )
    return await signed_in_response(request, session, settings, created.user_id, "/app")


# --------------------------------------------------------------------------------------------
# Invites and set-password links (the token travels in the query, then in the form)


@router.get("/invite")
async def invite_page(request: Request, session: SessionDep, token: str = "") -> Response:
    invite, team = await people.open_invite(session, token)
    return render(request, "invite.html", {"invite": invite, "team": team, "token": token,
                                           "form": {"email": "", "name": ""}, "errors": {}, "error": None})


@router.post("/invite")
async def accept_invite(
    request: Request, session: SessionDep, settings: SettingsDep, form: Annotated[InviteForm, Form()],
) -> Response:
    """Join the team of the invite, signed in at once."""
    token, email, password, name = form.token, form.email, form.password, form.name
    try:
        user = await people.accept_invite(session, token=token, email=email, name=name, password=password,
                                          free_generations=settings.free_generations_per_user)
    except (InvalidEmail, WeakPassword, EmailTaken) as exc:
        invite, team = await people.open_invite(session, token)
        return render(request, "invite.html", {
            "invite": invite, "team": team, "token": token, "form": {"email": email, "name": name},
            "errors": _field_errors(exc), "error": None,
        }, status_code=exc.status_code)
    return await signed_in_response(request, session, settings, user.id, "/app")


@router.get("/set-password")
async def set_password_page(request: Request, session: SessionDep, token: str = "") -> Response:
    _, user = await people.open_password_token(session, token)
    return render(request, "set_password.html", {"user": user, "token": token, "errors": {}, "error": None})


@router.post("/set-password")
async def set_password(
    request: Request, session: SessionDep, settings: SettingsDep, form: Annotated[PasswordForm, Form()],
) -> Response:
    token, password = form.token, form.password
    try:
        user = await people.use_password_token(session, token=token, password=password)
    except WeakPassword as exc:
        _, user = await people.open_password_token(session, token)
        return render(request, "set_password.html", {"user": user, "token": token,
                                                     "errors": {"password": exc.message}, "error": None},
                      status_code=422)
    return await signed_in_response(request, session, settings, user.id, "/app")
