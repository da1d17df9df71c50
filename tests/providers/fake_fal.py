"""A local fal.ai: the queue API (protocols.md §1.1–1.5), CDN uploads as fal-client 1.0.3 does
them (token from ``/storage/auth/token``, ``POST /files/upload``), the flux-lora and
flux-lora-fast-training outputs (§1.8–1.9), signed webhooks (§1.6–1.7) and a JWKS.

Behaviour is steered by the prompt: ``[500]`` fails the submit with HTTP 500, ``[slow]`` never
finishes, ``[fail]`` completes with an error, ``[malformed]`` returns an output without an
``images`` list, ``[badjson]`` returns a result that is not JSON, ``[notimage]`` points the image
URL at bytes that are not an image. A request goes IN_QUEUE → IN_PROGRESS → COMPLETED on
successive status polls; one submitted with ``fal_webhook`` completes at once and is delivered.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.localserver import png

GOOD_KEY = "fal-good-key"
KNOWN_APPS = {"fal-ai/flux-lora", "fal-ai/flux-lora-fast-training", "fal-ai/fast-sdxl", "fal-ai/flux"}
USER_ID = "user-123"


def sign_fal(key: Ed25519PrivateKey, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
    """fal's webhook signature: hex Ed25519 over ``id\\nuser\\ntimestamp\\nsha256_hex(body)``."""
    message = "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()
    return key.sign(message).hex()


def jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), "kid": "k1"}


@dataclass
class FalRequest:
    id: str
    app: str
    path: str
    input: dict[str, Any]
    webhook: str | None
    polls: int = 0
    canceled: bool = False
    completed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class FakeFal:
    def __init__(self) -> None:
        self.base = ""
        self.key = Ed25519PrivateKey.generate()
        self.requests: dict[str, FalRequest] = {}
        self.uploads: dict[str, bytes] = {}
        self.upload_headers: dict[str, dict[str, str]] = {}
        self.cancels: list[str] = []
        self.jwks_hits = 0
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.delivered = threading.Condition()
        self.app = Starlette(routes=[
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/storage/auth/token", self.cdn_token, methods=["POST"]),
            Route("/files/upload", self.upload, methods=["POST"]),
            Route("/files/{name:path}", self.file, methods=["GET"]),
            Route("/_sink", self.sink, methods=["POST"]),
            Route("/{owner}/{alias}/requests/{rid}/status", self.status, methods=["GET"]),
            Route("/{owner}/{alias}/requests/{rid}/cancel", self.cancel, methods=["PUT"]),
            Route("/{owner}/{alias}/requests/{rid}", self.result, methods=["GET"]),
            Route("/{app:path}", self.submit, methods=["POST"]),
        ])

    # -- helpers ------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Key {GOOD_KEY}"

    def _urls(self, app_id: str, rid: str) -> dict[str, str]:
        base = f"{self.base}/{app_id}/requests/{rid}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def _prompt(self, r: FalRequest) -> str:
        return str(r.input.get("prompt", ""))

    def output(self, r: FalRequest) -> Any:
        if r.app == "fal-ai/flux-lora-fast-training":
            return {
                "diffusers_lora_file": {"url": f"{self.base}/files/{r.id}/lora.safetensors", "file_name": "pytorch_lora_weights.safetensors", "content_type": "application/octet-stream", "file_size": 4},
                "config_file": {"url": f"{self.base}/files/{r.id}/config.json", "content_type": "application/json"},
            }
        prompt = self._prompt(r)
        if "[malformed]" in prompt:
            return {"pictures": []}
        size = r.input.get("image_size") or {"width": 1024, "height": 768}
        n = int(r.input.get("num_images", 1))
        name = "garbage.bin" if "[notimage]" in prompt else "img.png"
        return {
            "images": [
                {"url": f"{self.base}/files/{r.id}/{i}/{size['width']}x{size['height']}/{name}", "width": size["width"], "height": size["height"], "content_type": "image/png"}
                for i in range(n)
            ],
            "seed": r.input.get("seed", 42),
            "has_nsfw_concepts": [False] * n,
            "prompt": prompt,
            "timings": {"inference": 0.01},
        }

    def deliver(self, r: FalRequest) -> None:
        if "[fail]" in self._prompt(r):
            body = {"request_id": r.id, "gateway_request_id": r.id, "status": "ERROR", "error": "Invalid status code: 422", "payload": {"detail": [{"loc": ["body", "prompt"], "msg": "bad", "type": "value_error"}]}}
        else:
            body = {"request_id": r.id, "gateway_request_id": r.id, "status": "OK", "payload": self.output(r)}
        raw = json.dumps(body).encode()
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-fal-webhook-request-id": r.id,
            "x-fal-webhook-user-id": USER_ID,
            "x-fal-webhook-timestamp": timestamp,
            "x-fal-webhook-signature": sign_fal(self.key, r.id, USER_ID, timestamp, raw),
        }
        httpx.post(r.webhook, content=raw, headers=headers, timeout=5)

    def wait_for_delivery(self, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self.delivered:
            self.delivered.wait_for(lambda: len(self.deliveries) >= count, timeout)
            return list(self.deliveries)

    # -- routes -------------------------------------------------------------------------------

    async def jwks(self, request: Request) -> Response:
        self.jwks_hits += 1
        return JSONResponse({"keys": [jwk(self.key)]})

    async def cdn_token(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"detail": "Unauthorized"}, status_code=401)
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        return JSONResponse({"token": "cdn-token", "token_type": "Bearer", "base_url": self.base, "expires_at": expires})

    async def upload(self, request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer cdn-token":
            return JSONResponse({"detail": "bad token"}, status_code=401)
        name = f"{uuid.uuid4().hex}/{request.headers.get('x-fal-file-name', 'upload.bin')}"
        self.uploads[name] = await request.body()
        self.upload_headers[name] = dict(request.headers)
        return JSONResponse({"access_url": f"{self.base}/files/uploads/{name}"})

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.startswith("uploads/"):
            return Response(self.uploads[name.removeprefix("uploads/")], media_type="application/zip")
        if name.endswith("garbage.bin"):
            return Response(b"this is not an image", media_type="image/png")
        if name.endswith(".png"):
            rid, index, size, _ = name.split("/")
            width, height = (int(v) for v in size.split("x"))
            return Response(png(width, height, int(index)), media_type="image/png")
        return Response(b"LORA", media_type="application/octet-stream")

    async def sink(self, request: Request) -> Response:
        body = await request.body()
        with self.delivered:
            self.deliveries.append((dict(request.headers), body))
            self.delivered.notify_all()
        return Response(status_code=200)

    async def submit(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        path = request.path_params["app"]
        parts = path.split("/")
        app_id = "/".join(parts[:2])
        if "/".join(parts[:2]) not in KNOWN_APPS and path not in KNOWN_APPS:
            return JSONResponse({"detail": f"Application '{path}' not found"}, status_code=404)
        body = await request.json()
        if "[500]" in str(body.get("prompt", "")):
            return JSONResponse({"detail": "Internal server error"}, status_code=500)
        rid = str(uuid.uuid4())
        r = FalRequest(rid, app_id, path, body, request.query_params.get("fal_webhook"), headers=dict(request.headers))
        self.requests[rid] = r
        reply = {"request_id": rid, "gateway_request_id": rid, **self._urls(app_id, rid)}
        task = None
        if r.webhook:
            r.completed = True
            task = BackgroundTask(self.deliver, r)
        return JSONResponse(reply, background=task)

    def _find(self, request: Request) -> FalRequest | None:
        r = self.requests.get(request.path_params["rid"])
        app_id = f"{request.path_params['owner']}/{request.path_params['alias']}"
        return r if r is not None and r.app == app_id else None

    async def status(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        r = self._find(request)
        if r is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        with_logs = request.query_params.get("logs") in ("1", "true")
        r.polls += 1
        slow = "[slow]" in self._prompt(r)
        urls = self._urls(r.app, r.id)
        if r.canceled:
            return JSONResponse({"status": "COMPLETED", "logs": [], "metrics": {}, "error": "Request was cancelled", "error_type": "request_cancelled", **urls})
        if not r.completed and (slow or r.polls == 1):
            return JSONResponse({"status": "IN_QUEUE", "queue_position": 0, **urls})
        if not r.completed and r.polls == 2:
            logs = [{"message": "Loading model", "level": "INFO", "source": "user", "timestamp": "2026-01-01T00:00:00Z"},
                    {"message": " 50%|█████     | 14/28 [00:01<00:01, 9.8it/s]", "level": "INFO", "source": "user", "timestamp": "2026-01-01T00:00:01Z"}]
            return JSONResponse({"status": "IN_PROGRESS", "logs": logs if with_logs else None, **urls})
        r.completed = True
        reply: dict[str, Any] = {"status": "COMPLETED", "logs": [{"message": "done", "level": "INFO", "source": "user", "timestamp": "2026-01-01T00:00:02Z"}] if with_logs else None,
                                 "metrics": {"inference_time": 0.25}, **urls}
        if "[fail]" in self._prompt(r):
            reply |= {"error": "Invalid status code: 422", "error_type": "validation_error"}
        return JSONResponse(reply)

    async def result(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        r = self._find(request)
        if r is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        if not r.completed:
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400)
        if "[badjson]" in self._prompt(r):
            return Response(b"<html>upstream exploded", media_type="application/json")
        return JSONResponse(self.output(r))

    async def cancel(self, request: Request) -> Response:
        if not self._authorized(request):
            return JSONResponse({"detail": "Invalid API key"}, status_code=401)
        r = self._find(request)
        if r is None:
            return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
        self.cancels.append(r.id)
        if r.completed:
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        r.canceled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)


def zip_names(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
