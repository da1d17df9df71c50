"""Lists on pages: filters from the query string and links to the next page.

Filters come as plain strings (a GET form sends empty fields as ``""``), parsed here into what
the services take; a value that does not parse is reported beside its field instead of failing
the page. Pages are keyset cursors, as in the JSON API (``kit/pagination.py``): the link to the
next page keeps every other query parameter.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlencode

from fastapi import Request


@dataclass
class Filters:
    """Parsed filter values and the messages of those that did not parse (field → message)."""

    errors: dict[str, str] = field(default_factory=dict)

    def day(self, name: str, value: str | None) -> dt.date | None:
        """``YYYY-MM-DD`` (an ``<input type=date>``), or None."""
        if not value:
            return None
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            self.errors[name] = "Use a date such as 2026-01-31."
            return None

    def uuid(self, name: str, value: str | None) -> uuid.UUID | None:
        if not value:
            return None
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            self.errors[name] = "Not an id (a UUID such as 0b9c…)."
            return None

    def choice(self, name: str, value: str | None, choices: tuple[str, ...] | list[str]) -> str | None:
        if not value:
            return None
        if value not in choices:
            self.errors[name] = f"Choose one of {', '.join(choices)}."
            return None
        return value


def day_range(since: dt.date | None, until: dt.date | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Whole UTC days, both inclusive, as the half-open instants ``[since 00:00, until+1 00:00)``."""
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC) if since else None
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) if until else None
    return start, end


def with_query(request: Request, **changes: str | None) -> str:
    """This page's path and query with ``changes`` (None removes a parameter)."""
    params = {k: v for k, v in request.query_params.items() if k not in changes}
    params.update({k: v for k, v in changes.items() if v is not None})
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def safe_back(target: str | None, default: str) -> str:
    """A path on this site to return to after a form (never ``//host`` or a URL)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default
