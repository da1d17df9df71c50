"""S3 fixtures: a real S3-compatible server (moto's server mode) started once per session as a
subprocess on 127.0.0.1, and a fresh bucket per test; ``storage``: each backend in turn."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from pixelmint.storage.backend import LocalStorage, Storage
from pixelmint.storage.s3 import S3Storage
from tests.helpers import wait_for_http

S3_KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server process, stopped at the end of the session."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/data.json", server, timeout=30)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    """A plain boto3 client on the moto server, to look at what the backend did."""
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"pm-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_storage(s3_endpoint: str, s3_bucket: str) -> S3Storage:
    return S3Storage(bucket=s3_bucket, endpoint_url=s3_endpoint, region="us-east-1", prefix="pm", **S3_KEYS)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "images", "secret")
    return request.getfixturevalue("s3_storage")
