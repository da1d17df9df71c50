"""Request dependencies every router shares: the process's settings and database, a session per
request that commits when the endpoint returns, the admin token, and the ``Idempotency-Key`` and
rate-limit dependencies of the POSTs that create or spend.

The process's runtime (``api/runtime.Runtime``) is on ``request.app.state.runtime``; a router takes
the pieces it needs through ``from_runtime`` (``SettingsDep``, ``DatabaseDep`` here, ``StorageDep``
and ``UrlSignerDep`` in ``storage/deps.py``, ``JobEventsDep`` and ``ProvidersDep`` in
``jobs/deps.py``), never the runtime itself. Who the caller is comes from its domain:
``accounts/auth.py`` (API keys), ``credits/auth.py`` (apps' service keys).
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.kit import idempotency
from pixelmint.kit.db import Database
from pixelmint.kit.errors import Forbidden, Unauthorized, error_responses
from pixelmint.kit.idempotency import (
    Idempotency,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    IdempotencyKeyUnresolved,
    InvalidIdempotencyKey,
    Owner,
)
from pixelmint.kit.ratelimit import RateLimited, RateLimiter
from pixelmint.settings import Settings


def from_runtime(name: str) -> Any:
    """Dependency on one piece of the process's runtime (``request.app.state.runtime.<name>``)."""

    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop per request and piece.
    async def piece(request: Request) -> Any:
        return getattr(request.app.state.runtime, name)

    piece.__name__ = f"runtime_{name}"
    return Depends(piece)


SettingsDep = Annotated[Settings, from_runtime("settings")]
DatabaseDep = Annotated[Database, from_runtime("db")]
RateLimiterDep = Annotated[RateLimiter, from_runtime("rate_limiter")]


async def get_session(db: DatabaseDep) -> AsyncIterator[AsyncSession]:
    """A session for the request. Its transaction commits when the endpoint returns (before the
    answer is sent) and rolls back when it raises. An endpoint that must act after its writes are
    committed (wait for a job, call a provider, delete a stored object) commits explicitly first."""
    async with db.sessionmaker() as session:
        yield session
        if session.in_transaction():
            await session.commit()


# "function" scope: the exit (the commit) runs when the endpoint returns, before the answer is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <apiKey>")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class AdminDisabled(Forbidden):
    """403: the admin API is off because ``PIXELMINT_ADMIN_TOKEN`` is unset."""

    code = "admin_disabled"


class InvalidAdminToken(Unauthorized):
    """401: the bearer token is not ``PIXELMINT_ADMIN_TOKEN``."""

    code = "invalid_admin_token"


@error_responses(InvalidAdminToken, AdminDisabled)
async def require_admin(settings: SettingsDep, credentials: BearerDep) -> None:
    """Admin endpoints take ``Authorization: Bearer <PIXELMINT_ADMIN_TOKEN>``; without that setting
    they are disabled (403)."""
    token = settings.admin_token
    if not token:
        raise AdminDisabled("Admin API is disabled: set PIXELMINT_ADMIN_TOKEN.")
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise InvalidAdminToken("Invalid admin token.")


AdminDep = Annotated[None, Depends(require_admin)]


def base_url(request: Request, settings: Settings) -> str:
    """Where image URLs point: ``PIXELMINT_PUBLIC_URL``, else the address this server listens on,
    from the socket. Never the ``Host`` header, which is the client's to choose: a signed link
    built on it would send the image, and its signature, to any host."""
    if settings.public_url:
        return settings.public_url
    host, port = request.scope.get("server") or ("localhost", None)
    return _url(request.scope.get("scheme", "http"), host, port, request.scope.get("root_path") or "/")


@functools.lru_cache(maxsize=64)
def _url(scheme: str, host: str, port: int | None, path: str) -> str:
    """A listening address as a URL (built once per address: every request that shows images asks)."""
    return str(httpx.URL(scheme=scheme, host=host, port=port, path=path))


# --------------------------------------------------------------------------------------------
# Idempotency-Key and rate limits: one dependency per endpoint

_idempotent: dict[Callable[..., Any], Any] = {}
_rate_limits: dict[tuple[str, Callable[..., Any]], Any] = {}


def idempotent(caller: Callable[..., Any]) -> Any:
    """Dependency that honours ``Idempotency-Key`` on a POST that creates or spends
    (``kit/idempotency.py``): ``dependencies=[idempotent(get_principal)]``, or a parameter
    ``idempotency: IdempotencyDep`` (``accounts/auth.py``) through which the endpoint can ``save``
    its answer in its own transaction.

    Keys belong to the caller's owner: ``caller`` is the authentication dependency, whose result has
    an ``app_id`` (credit-API apps: ``idempotent(get_app)``) or a ``team_id``. List it after
    ``rate_limit`` and after any dependency that may reject the request: errors raised after it
    (4xx) are stored as the key's answer.
    """
    if caller not in _idempotent:

        @error_responses(IdempotencyKeyReused, IdempotencyKeyInProgress, IdempotencyKeyUnresolved, InvalidIdempotencyKey)
        async def dependency(
            request: Request,
            session: SessionDep,
            db: DatabaseDep,
            settings: SettingsDep,
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
            stale_after = settings.wait_for_result_timeout_seconds + 60
            async with idempotency.guard(
                request, session, db, key=key, owner=Owner.of(who), stale_after=stale_after
            ) as handle:
                yield handle

        # "function" scope: the dependency's exit runs before the answer is sent (the middleware
        # stores it), not after, as request-scoped dependencies do.
        _idempotent[caller] = Depends(dependency, scope="function")
    return _idempotent[caller]


def rate_limit(scope: str, caller: Callable[..., Any]) -> Any:
    """Dependency that counts the request against ``scope``'s limits (``kit/ratelimit.py``):
    ``dependencies=[rate_limit("generate", get_principal)]``; over a limit it is 429
    ``rate_limited`` with ``Retry-After``.

    Per key: the caller's ``api_key_id`` (or an app's ``app_id``); per team: its ``team_id``
    (none counted when it is ``None``: see ``credits/auth.spending_caller``).
    """
    if (scope, caller) not in _rate_limits:

        @error_responses(RateLimited)
        async def dependency(request: Request, limiter: RateLimiterDep, who: Any = Depends(caller)) -> None:
            team = getattr(who, "team_id", None)
            key = getattr(who, "api_key_id", None) or getattr(who, "app_id", None)
            await limiter.hit(scope, team=team, key=key)

        _rate_limits[(scope, caller)] = Depends(dependency)
    return _rate_limits[(scope, caller)]
