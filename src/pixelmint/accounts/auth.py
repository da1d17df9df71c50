"""Who is calling: the API key of ``Authorization: Bearer``, as a request dependency, and the
Idempotency-Key and rate-limit dependencies keyed on it (``kit/http.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from pixelmint.accounts.errors import InvalidApiKey, MissingApiKey
from pixelmint.accounts.service import Principal, authenticate
from pixelmint.kit import http
from pixelmint.kit.errors import error_responses
from pixelmint.kit.idempotency import Idempotency


@error_responses(MissingApiKey, InvalidApiKey)
async def get_principal(session: http.SessionDep, credentials: http.BearerDep) -> Principal:
    return await authenticate(session, credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
IdempotencyDep = Annotated[Idempotency, http.idempotent(get_principal)]


def rate_limit(scope: str) -> Any:
    """``dependencies=[rate_limit("generate")]``: the API key's and its team's limits of ``scope``."""
    return http.rate_limit(scope, get_principal)
