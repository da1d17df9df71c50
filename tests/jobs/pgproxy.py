"""A TCP proxy in front of PostgreSQL that injects network faults.

- A late COMMIT acknowledgement: on a client connection that has sent ``commit_marker`` (a piece
  of SQL text), the server's reply to the next ``COMMIT`` is held back — the server has committed,
  the client does not know — until the client gives up on it: it sends a cancel request (asyncpg
  does when the awaiting task is cancelled) or closes the connection. Then the held reply is
  delivered, late. ``held`` is set when a reply is being held, ``gave_up`` when the client gave up
  on it. With ``lose=True`` the reply never comes: the proxy breaks the connection instead (the
  client's COMMIT raises).
- A server restart: ``drop_all()`` breaks every open connection, and the next ``refuse``
  connections are closed at once (the server is still down); ``refused`` counts them.
- A half-open connection (a network partition, a NAT entry dropped): ``freeze_all()`` makes every
  open connection silently lose what either side sends from then on, without closing it; new
  connections work.
"""

from __future__ import annotations

import asyncio
import struct
from contextlib import suppress

from pixelmint.kit.db import asyncpg_connect_kwargs

CANCEL_REQUEST = struct.pack("!ii", 16, 80877102)


class PgProxy:
    def __init__(self, database_url: str, *, commit_marker: bytes | None = None, lose: bool = False) -> None:
        self._target = asyncpg_connect_kwargs(database_url)
        self.commit_marker = commit_marker
        self.lose = lose
        self.held = asyncio.Event()
        self.gave_up = asyncio.Event()
        self.refuse = self.refused = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._frozen: set[asyncio.Event] = set()
        self.url = ""

    async def __aenter__(self) -> PgProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        t = self._target
        password = f":{t['password']}" if t["password"] else ""
        self.url = f"postgresql://{t['user']}{password}@127.0.0.1:{port}/{t['database']}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self.drop_all()

    async def drop_all(self) -> None:
        """Break every open connection."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def freeze_all(self) -> None:
        """Every open connection loses all traffic from now on, and stays open."""
        for frozen in self._frozen:
            frozen.set()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self._target["host"], self._target["port"]
        if host.startswith("/"):  # the embedded server listens on a Unix socket
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.refused < self.refuse:
            self.refused += 1
            client_w.close()
            return
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        server_r, server_w = await self._connect_upstream()
        armed = holding = False
        released = asyncio.Event()
        frozen = asyncio.Event()
        self._frozen.add(frozen)

        async def client_to_server() -> None:
            nonlocal armed, holding
            while data := await client_r.read(65536):
                if frozen.is_set():
                    continue
                if data.startswith(CANCEL_REQUEST) and self.held.is_set():
                    self.gave_up.set()
                armed = armed or (self.commit_marker is not None and self.commit_marker in data)
                if armed and not holding and b"COMMIT" in data:
                    holding = True  # set before the COMMIT reaches the server: its reply is held
                server_w.write(data)
                await server_w.drain()

        async def server_to_client() -> None:
            while data := await server_r.read(65536):
                if frozen.is_set():
                    continue
                if holding and not released.is_set():
                    self.held.set()
                    if self.lose:
                        return
                    await released.wait()
                client_w.write(data)
                await client_w.drain()

        async def release_when_given_up() -> None:
            await self.gave_up.wait()
            released.set()

        pumps = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
        watcher = asyncio.create_task(release_when_given_up())
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if holding and pumps[0].done():
                self.gave_up.set()  # the client closed the connection while its reply was held
        finally:
            for task in (*pumps, watcher):
                task.cancel()
            for writer in (client_w, server_w):
                writer.close()
                with suppress(Exception):
                    await writer.wait_closed()
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._frozen.discard(frozen)
