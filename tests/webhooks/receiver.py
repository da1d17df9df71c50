"""A webhook receiver on 127.0.0.1, served by uvicorn in the test's own event loop: it records
every request and answers each with the next scripted answer (then 204s). Tests await the
requests they expect (``wait_for``), woken as each arrives."""

from __future__ import annotations

import asyncio
import socket
from contextlib import suppress
from dataclasses import dataclass, field

import uvicorn


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._arrived = asyncio.Condition()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, extra = self.script.pop(0) if self.script else (204, {})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in extra.items()]})
        await send({"type": "http.response.body", "body": f"answer {status}".encode() if status != 204 else b""})
        async with self._arrived:
            self.requests.append(Received(scope["path"], headers, body))
            self._arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Wait until ``count`` requests have arrived; the requests so far."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) >= count), timeout)
        return self.requests

    async def __aenter__(self) -> Receiver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self, lifespan="off", log_level="warning", access_log=False))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        started = asyncio.get_running_loop().time()
        while not self._server.started:  # uvicorn's flag, set within a few loop turns; bounded
            assert not self._task.done() and asyncio.get_running_loop().time() - started < 10
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        with suppress(Exception):
            await asyncio.wait_for(self._task, 10)
