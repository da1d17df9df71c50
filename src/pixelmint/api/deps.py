"""Request dependencies: the runtime, a database session, the authenticated caller, and the
``Idempotency-Key`` and rate-limit dependencies of the POSTs that create or spend.

The session is opened per request and closed (rolled back unless committed) afterwards; endpoints
that write commit explicitly, so that the commit happens before the answer is sent.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal, authenticate
from pixelmint.api.errors import error_responses
from pixelmint.api.runtime import Runtime
from pixelmint.kit import idempotency
from pixelmint.kit.errors import Forbidden, Unauthorized
from pixelmint.kit.idempotency import Idempotency, Owner


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.db.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <apiKey>")


@error_responses({401: "missing_api_key, invalid_api_key"})
async def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await authenticate(session, credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@error_responses({401: "invalid_admin_token", 403: "admin_disabled (PIXELMINT_ADMIN_TOKEN is unset)"})
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
    """Where image URLs point: ``PIXELMINT_PUBLIC_URL``, else the address this server listens on,
    from the socket. Never the ``Host`` header, which is the client's to choose: a signed link
    built on it would send the image, and its signature, to any host."""
    if runtime.settings.public_url:
        return runtime.settings.public_url
    host, port = request.scope.get("server") or ("localhost", None)
    return str(httpx.URL(scheme=request.url.scheme, host=host, port=port, path=request.scope.get("root_path") or "/"))


# --------------------------------------------------------------------------------------------
# Idempotency-Key and rate limits: one dependency per endpoint

_idempotent: dict[Callable[..., Any], Any] = {}
_rate_limits: dict[tuple[str, Callable[..., Any]], Any] = {}


def idempotent(caller: Callable[..., Any] = get_principal) -> Any:
    """Dependency that honours ``Idempotency-Key`` on a POST that creates or spends
    (``kit/idempotency.py``): ``dependencies=[idempotent()]``, or a parameter
    ``idempotency: IdempotencyDep`` through which the endpoint can ``save`` its answer in its own
    transaction.

    Keys belong to the caller's owner: ``caller`` is the authentication dependency, whose result has
    an ``app_id`` (credit-API apps: ``idempotent(get_app)``) or a ``team_id``. List it after
    ``rate_limit`` and after any dependency that may reject the request: errors raised after it
    (4xx) are stored as the key's answer.
    """
    if caller not in _idempotent:

        async def dependency(
            request: Request,
            session: SessionDep,
            runtime: RuntimeDep,
            who: Any = Depends(caller),
            key: str | None = Header(
                None, alias=idempotency.HEADER, max_length=idempotency.MAX_KEY_LENGTH,
                json_schema_extra={"minLength": 1, "pattern": "^[\x21-\x7e]+$"},  # invalid_idempotency_key
                description="Any unique string (e.g. a UUID) to make a retry safe: the same key and body "
                "replay the first answer (with `Idempotent-Replayed: true`); another body is 409.",
            ),
        ) -> AsyncIterator[Idempotency]:
            # A first request that has not answered within this is presumed dead (waitForResult
            # is the longest any request waits).
            stale_after = runtime.settings.wait_for_result_timeout_seconds + 60
            async with idempotency.guard(
                request, session, runtime.db, key=key, owner=Owner.of(who), stale_after=stale_after
            ) as handle:
                yield handle

        error_responses({409: "idempotency_key_reused, idempotency_key_in_progress, idempotency_key_unresolved"})(
            dependency)
        # "function" scope: the dependency's exit runs before the answer is sent (the middleware
        # stores it), not after, as request-scoped dependencies do.
        _idempotent[caller] = Depends(dependency, scope="function")
    return _idempotent[caller]


IdempotencyDep = Annotated[Idempotency, idempotent()]


async def _team_in_body(request: Request) -> uuid.UUID | None:
    """``teamId`` of a JSON body (credit-API calls name the team they charge), if there is one.

    Whatever the ``Content-Type`` says: FastAPI accepts JSON under several (``application/json;
    charset=utf-8``, ``Application/JSON``, ``application/…+json``), and a limit that trusted the
    header could be dodged by changing it. ``request.json()`` reuses FastAPI's parse when it made one.
    """
    try:
        return uuid.UUID((await request.json())["teamId"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def rate_limit(scope: str, caller: Callable[..., Any] = get_principal) -> Any:
    """Dependency that counts the request against ``scope``'s limits (``kit/ratelimit.py``):
    ``dependencies=[rate_limit("generate")]``; over a limit it is 429 ``rate_limited`` with
    ``Retry-After``.

    Per key: the caller's ``api_key_id`` (or an app's ``app_id``); per team: its ``team_id``, or
    the ``teamId`` of the JSON body for credit-API apps (``rate_limit("consume", get_app)``).
    """
    if (scope, caller) not in _rate_limits:

        @error_responses({429: "rate_limited (see Retry-After)"})
        async def dependency(request: Request, runtime: RuntimeDep, who: Any = Depends(caller)) -> None:
            team = getattr(who, "team_id", None) or await _team_in_body(request)
            key = getattr(who, "api_key_id", None) or getattr(who, "app_id", None)
            await runtime.rate_limiter.hit(scope, team=team, key=key)

        _rate_limits[(scope, caller)] = Depends(dependency)
    return _rate_limits[(scope, caller)]
