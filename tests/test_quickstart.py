"""The README quick start, for real: ``pixelmint serve`` on the embedded PostgreSQL, the admin CLI
in another process, a generation through HTTP, and the ledger check."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile

import httpx
import pytest
from PIL import Image

from tests.helpers import wait_for_http

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelmint.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_quick_start_on_the_embedded_database() -> None:
    data_dir = tempfile.mkdtemp(prefix="/tmp/pmq")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PIXELMINT_DATABASE_URL")}
    env.update(PIXELMINT_DATA_DIR=data_dir, PIXELMINT_LOG_LEVEL="warning")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pixelmint.cli", "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/healthz", server, timeout=90)

        created = cli("admin", "create-team", "Acme", "--plan", "basic", "--json", env=env)
        assert created.returncode == 0, created.stderr
        ids = json.loads(created.stdout)
        assert set(ids) == {"teamId", "userId", "apiKey"}
        headers = {"Authorization": f"Bearer {ids['apiKey']}"}

        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            models = client.get("/api/v1/reference-models").json()["items"]
            body = {"referenceModelId": models[0]["id"], "prompt": "a paper boat", "resolution": "256x192", "waitForResult": True}
            reply = client.post("/api/v1/generate", json=body)
            assert reply.status_code == 200, reply.text
            job = reply.json()["job"]
            assert job["status"] == "succeeded" and reply.json()["freeGenerationsRemaining"] == 2
            png = client.get(job["images"][0]["url"])
            assert Image.open(io.BytesIO(png.content)).size == (256, 192)
            assert client.get("/openapi.json").status_code == 200

        check = cli("admin", "check-ledger", env=env)
        assert check.returncode == 0 and "ok" in check.stdout, check.stdout + check.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
