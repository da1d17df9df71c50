"""The OpenAPI schema describes what the server really does: the ``Error`` body on every
operation with the statuses each may answer, request bodies that refuse unknown fields and carry
their limits, so that a schema-driven client (or fuzzer, scripts/fuzz) produces valid requests."""

from __future__ import annotations

import typing

import pytest
from fastapi import FastAPI

from pixelmint.api.app import create_app
from pixelmint.api.errors import _api_routes
from pixelmint.kit.schemas import RequestMap, RequestModel
from pixelmint.settings import Settings

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(), "postgresql://unused@127.0.0.1/unused", run_worker=False)


@pytest.fixture(scope="module")
def operations(app: FastAPI) -> list[tuple[str, str, dict]]:
    schema = app.openapi()
    return [(method, path, op) for path, item in schema["paths"].items() for method, op in item.items()]


def test_every_operation_documents_the_real_error_body(app, operations) -> None:
    components = app.openapi()["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    assert components["Error"]["required"] == ["error", "message"]
    for method, path, op in operations:
        responses = op["responses"]
        for status in ("422", "500", "503"):
            assert responses[status]["content"] == ERROR, (method, path, status)
        assert "Retry-After" in responses["503"]["headers"]
        for status, response in responses.items():
            if status[0] in "45":
                assert response["content"] == ERROR and response["description"], (method, path, status)
        if op.get("security"):
            assert "401" in responses, (method, path)
        if "requestBody" in op:
            assert "413" in responses, (method, path)


@pytest.mark.parametrize(("method", "path", "statuses"), [
    ("post", "/api/v1/generate", {"401", "402", "404", "409", "429"}),
    ("post", "/api/v1/credits/consume", {"401", "402", "409", "429"}),
    ("post", "/api/v1/admin/reference-models", {"401", "403"}),
    ("put", "/api/v1/admin/apps/{app_id}/operations", {"401", "403", "404"}),
    ("get", "/api/v1/jobs/{job_id}", {"401", "404"}),
])
def test_statuses_of_dependencies_and_routes_are_documented(operations, method, path, statuses) -> None:
    [op] = [op for m, p, op in operations if (m, p) == (method, path)]
    assert statuses <= set(op["responses"]), sorted(op["responses"])


def test_every_request_body_refuses_unknown_fields_and_unstorable_text(app) -> None:
    for route in _api_routes(app.routes):
        if route.body_field is None:
            continue
        body = route.body_field.field_info.annotation
        body = next((a for a in typing.get_args(body) if isinstance(a, type)), body)  # Optional[...]
        assert isinstance(body, type) and issubclass(body, (RequestModel, RequestMap)), (route.path, body)


def test_request_limits_are_in_the_schema(app) -> None:
    schemas = app.openapi()["components"]["schemas"]
    generate = schemas["GenerateRequest"]
    assert generate["additionalProperties"] is False
    assert generate["properties"]["prompt"]["maxLength"] == 2000
    assert "pattern" in generate["properties"]["resolution"]
    assert generate["properties"]["numImages"]["maximum"] == 4
    assert schemas["ReferenceModelPatch"]["properties"]["popularity"]["maximum"] == 2**31 - 1
    for name, schema in schemas.items():
        if name.endswith(("Request", "In", "Patch", "Json")):
            assert schema.get("additionalProperties") is False, name
