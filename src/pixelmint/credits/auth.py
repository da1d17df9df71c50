"""Which app is calling the credit API: its service key in ``Authorization: Bearer``, as a request
dependency, and the Idempotency-Key and rate-limit dependencies keyed on it (``kit/http.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from pixelmint.credits import apps
from pixelmint.credits.errors import InvalidServiceKey
from pixelmint.kit import http
from pixelmint.kit.errors import error_responses


@error_responses(InvalidServiceKey)
async def get_app(session: http.SessionDep, credentials: http.BearerDep) -> apps.AppPrincipal:
    return await apps.authenticate_app(session, credentials.credentials if credentials else None)


AppDep = Annotated[apps.AppPrincipal, Depends(get_app)]
# The POSTs that spend: per-app and per-team limits of "consume", then the Idempotency-Key.
SPENDING = [http.rate_limit("consume", get_app), http.idempotent(get_app)]
