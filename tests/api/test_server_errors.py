"""Unexpected failures answer JSON, never plain text: 500 ``internal_error`` for a bug, 503
``database_unavailable`` (with ``Retry-After``) when PostgreSQL cannot be reached; each is logged
once with the request id that the answer carries (``X-Request-ID`` and ``requestId``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import structlog

from pixelmint.api.app import create_app
from pixelmint.credits import service as credits_service
from pixelmint.kit.db import asyncpg_connect_kwargs
from tests.builders import auth, make_team


def _errors(logs: list[dict], request_id: str) -> list[dict]:
    return [e for e in logs if e["log_level"] == "error" and e.get("request_id") == request_id]


async def test_a_bug_is_a_json_500_logged_once_with_the_request_id(api, db, monkeypatch) -> None:
    team = await make_team(db)

    async def broken(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the balance query")

    monkeypatch.setattr(credits_service, "get_balance", broken)
    with structlog.testing.capture_logs() as logs:
        response = await api.get("/api/v1/credits/balance", headers=auth(team))
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "internal_error" and "bug" not in body["message"]  # no internals leak
    request_id = response.headers["x-request-id"]
    assert body["requestId"] == request_id and re.fullmatch(r"[0-9a-f]{32}", request_id)
    [logged] = _errors(logs, request_id)
    assert logged["event"] == "internal_error" and logged["path"] == "/api/v1/credits/balance"
    assert isinstance(logged["exc_info"], RuntimeError)


async def test_a_sane_incoming_request_id_is_kept_and_an_insane_one_replaced(api, db) -> None:
    team = await make_team(db)
    kept = await api.get("/api/v1/credits/balance", headers={**auth(team), "X-Request-ID": "trace-42.a:b"})
    assert kept.status_code == 200 and kept.headers["x-request-id"] == "trace-42.a:b"
    for insane in ("has spaces", "x" * 129, ""):
        replaced = await api.get("/api/v1/credits/balance", headers={**auth(team), "X-Request-ID": insane})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), insane
    unknown = await api.get("/api/v1/nowhere")
    assert unknown.status_code == 404 and unknown.headers["x-request-id"]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL until ``cut()``: then it refuses new connections and
    drops the open ones, as a database that went down does."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target
        if host.startswith("/"):  # the embedded server's Unix socket
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


@pytest.fixture
async def proxied_api(settings, database_url) -> AsyncIterator[tuple[httpx.AsyncClient, TcpProxy]]:  # type: ignore[no-untyped-def]
    target = asyncpg_connect_kwargs(database_url)
    proxy = TcpProxy(target["host"], target["port"])
    port = await proxy.start()
    credentials = target["user"] + (f":{target['password']}" if target["password"] else "")
    url = f"postgresql://{credentials}@127.0.0.1:{port}/{target['database']}"
    app = create_app(settings, url, run_worker=False)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield client, proxy


async def test_a_database_that_is_down_is_a_json_503_with_retry_after(proxied_api, db) -> None:
    api, proxy = proxied_api
    team = await make_team(db)
    assert (await api.get("/api/v1/credits/balance", headers=auth(team))).status_code == 200  # a pooled connection
    await proxy.cut()
    with structlog.testing.capture_logs() as logs:
        for path in ("/api/v1/credits/balance", "/api/v1/credits/balance", "/healthz"):  # pooled, then new
            response = await api.get(path, headers=auth(team))
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"] == "database_unavailable" and response.headers["retry-after"] == "5"
            assert body["requestId"] == response.headers["x-request-id"]
            assert [e["event"] for e in _errors(logs, body["requestId"])] == ["database_unavailable"]
