"""Opaque cursors for keyset pagination (base64url of a small JSON list)."""

from __future__ import annotations

import base64
import json
from typing import Any

from pixelmint.kit.errors import InvalidRequest


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(values, list):
            raise ValueError
        return values
    except (ValueError, TypeError):
        raise InvalidRequest("The cursor is not valid; use nextCursor from the previous page.", code="invalid_cursor") from None
