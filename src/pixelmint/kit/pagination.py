"""Opaque cursors for keyset pagination (base64url of a small JSON list)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from pixelmint.kit.errors import InvalidRequest
from pixelmint.kit.schemas import utc


class InvalidCursor(InvalidRequest):
    """422: a pagination cursor that ``encode_cursor`` did not make (mangled, or from another list)."""

    code = "invalid_cursor"


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *types: Callable[[Any], Any]) -> list[Any]:
    """The values of a cursor made by ``encode_cursor``, each passed through its converter in
    ``types`` (e.g. ``datetime.fromisoformat, uuid.UUID``). Raises ``InvalidRequest``
    (``InvalidCursor``, 422) for anything else: a client's mangled cursor is never a 500."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError
        return [convert(value) for convert, value in zip(types, values, strict=True)]
    except (ValueError, TypeError, AttributeError, OverflowError):
        raise InvalidCursor("The cursor is not valid; use nextCursor from the previous page.") from None


def timestamp(value: Any) -> dt.datetime:
    """A cursor's ISO 8601 timestamp (strings only), as an instant in UTC."""
    if not isinstance(value, str):
        raise TypeError
    return utc(dt.datetime.fromisoformat(value))


def _integer(value: Any, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise OverflowError
    return value


def integer(value: Any) -> int:
    """A cursor's value of a PostgreSQL ``integer`` column (32 bits)."""
    return _integer(value, 32)


def bigint(value: Any) -> int:
    """A cursor's value of a PostgreSQL ``bigint`` column (64 bits), e.g. a ledger id."""
    return _integer(value, 64)


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value
