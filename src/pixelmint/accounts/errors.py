"""The accounts errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import InvalidRequest, NotFound, Unauthorized


class InvalidApiKey(Unauthorized):
    """401: the API key is unknown or revoked."""

    code = "invalid_api_key"


class MissingApiKey(Unauthorized):
    """401: the request sends no 'Authorization: Bearer <apiKey>' header."""

    code = "missing_api_key"


class TeamNotFound(NotFound):
    """404: no team has that id (or, for credits, it has no credit balance)."""

    code = "team_not_found"


class UnknownPlan(InvalidRequest):
    """422: no plan has that code."""

    code = "unknown_plan"
