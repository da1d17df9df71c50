"""Run an ASGI app with uvicorn on 127.0.0.1 and a free port, in a thread, for the length of a
``with`` block (or a session fixture). Also: PNG bytes made with Pillow, as fake providers serve."""

from __future__ import annotations

import io
import socket
import threading
import time

import uvicorn
from PIL import Image


class LocalServer:
    """``lifespan="on"`` runs the app's startup too (the whole service, with its own pool, worker
    and event loop in the server's thread)."""

    def __init__(self, app, *, lifespan: str = "off", start_timeout: float = 10) -> None:
        self.app = app
        self.lifespan = lifespan
        self.start_timeout = start_timeout
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> LocalServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan=self.lifespan, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:  # another thread's flag: polled, bounded
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("local server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=30)


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A real PNG of the given size, coloured by ``seed``."""
    color = ((seed * 97) % 256, (seed * 57 + 80) % 256, (seed * 31 + 160) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()
