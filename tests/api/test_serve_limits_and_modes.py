"""A real ``pixelmint serve`` process: body caps over a raw socket (a declared 50 MB body is
refused from its headers, a chunked one as soon as it passes the cap), and the modes of the data
directory it creates."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for_http

pytestmark = pytest.mark.slow

BODY = 50 * 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[int]:
    """Port of a ``pixelmint serve`` process on the test database, with the data directory
    ``tmp_path / "data"``, which it creates."""
    port = free_port()
    data = tmp_path / "data"
    env = {**os.environ, "DATABASE_URL": database_url, "PIXELMINT_DATA_DIR": str(data), "PIXELMINT_LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "pixelmint.cli", "serve", "--port", str(port), "--no-worker"], env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process, timeout=90)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the (Connection: close) response on ``sock``."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post(port: int, headers: str, body: bytes = b"") -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}\r\n"
        sock.sendall(head.encode() + body)
        return response(sock)


def test_large_bodies_are_refused_before_they_are_read(server: int) -> None:
    port = server
    assert post(port, "Content-Length: 2\r\n", b"{}")[0] == 401  # a small body reaches the app

    # Declared: answered from the headers, before the client sends any of the 50 MB.
    status, body = post(port, f"Content-Length: {BODY}\r\n")
    assert (status, body["error"]) == (413, "payload_too_large")

    # Chunked: refused once the body passes the 1 MiB default; the client sends just past it.
    piece = b"x" * 65536
    chunked = (b"%x\r\n" % len(piece) + piece + b"\r\n") * (2**20 // len(piece) + 1)
    status, body = post(port, "Transfer-Encoding: chunked\r\n", b'6\r\n{"a":"\r\n' + chunked)
    assert (status, body["error"]) == (413, "payload_too_large")


def test_the_data_directory_it_creates_is_private(server: int, tmp_path: Path) -> None:
    """The secret key and the catalog previews rendered at start-up are the owner's only."""
    data = tmp_path / "data"
    files = [p for p in data.rglob("*") if p.is_file()]
    assert data / "secret_key" in files and any(p.suffix == ".png" for p in files)
    for path in [data, *data.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
