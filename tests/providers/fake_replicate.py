"""A local Replicate API (protocols.md §2): predictions by model and by version with
``Prefer: wait``, get/cancel, trainings, ``POST /v1/files`` uploads, problem-details errors and
Standard-Webhooks-signed deliveries.

Prompts steer it like the fake fal: ``[500]`` (HTTP 500 at create), ``[slow]`` (never finishes),
``[fail]`` (prediction ``failed``), ``[malformed]`` (output is not a list of URLs), ``[badjson]``
(GET answers a body that is not JSON). A prediction goes starting → processing → succeeded on
successive GETs; with ``Prefer: wait`` or a webhook it finishes at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.localserver import png

GOOD_TOKEN = "r8-good-token"
KNOWN_MODELS = {"black-forest-labs/flux-dev-lora", "stability-ai/sdxl"}
VERSION = "a" * 64
TRAINER = "ostris/flux-dev-lora-trainer"
TRAINER_VERSION = "b" * 64
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"replicate-test-secret-0123456789").decode()


def sign_standard(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Job:
    kind: str  # predictions | trainings
    id: str
    model: str
    version: str
    input: dict[str, Any]
    webhook: str | None = None
    events: list[str] = field(default_factory=list)
    destination: str | None = None
    status: str = "starting"
    polls: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)


class FakeReplicate:
    def __init__(self) -> None:
        self.base = ""
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}  # id -> (name, content type, bytes)
        self.cancels: list[str] = []
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.delivered = threading.Condition()
        self.app = Starlette(routes=[
            Route("/v1/models/{owner}/{name}/predictions", self.create_by_model, methods=["POST"]),
            Route("/v1/models/{owner}/{name}/versions/{version}/trainings", self.create_training, methods=["POST"]),
            Route("/v1/predictions", self.create_by_version, methods=["POST"]),
            Route("/v1/predictions/{id}", self.get, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/trainings/{id}", self.get, methods=["GET"]),
            Route("/v1/trainings/{id}/cancel", self.cancel, methods=["POST"]),
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/files/{name:path}", self.file, methods=["GET"]),
            Route("/_sink", self.sink, methods=["POST"]),
        ])

    # -- helpers ------------------------------------------------------------------------------

    def _problem(self, status: int, title: str, detail: str) -> Response:
        return JSONResponse({"type": "https://replicate.com/docs/errors", "title": title, "detail": detail, "status": status},
                            status_code=status, media_type="application/problem+json")

    def _auth(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {GOOD_TOKEN}":
            return self._problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    def output(self, job: Job) -> Any:
        if job.kind == "trainings":
            return {"version": f"{job.destination}:{'c' * 64}", "weights": f"{self.base}/files/{job.id}/weights.tar"}
        if "[malformed]" in str(job.input.get("prompt")):
            return {"images": "nope"}
        n = int(job.input.get("num_outputs", 1))
        return [f"{self.base}/files/{job.id}/{i}.png" for i in range(n)]

    def finish(self, job: Job) -> None:
        job.status = "failed" if "[fail]" in str(job.input.get("prompt")) else "succeeded"

    def body(self, job: Job) -> dict[str, Any]:
        done = job.status in ("succeeded", "failed", "canceled")
        urls = {"get": f"{self.base}/v1/{job.kind}/{job.id}", "cancel": f"{self.base}/v1/{job.kind}/{job.id}/cancel",
                "web": f"https://replicate.com/p/{job.id}"}
        logs = ""
        if job.status in ("processing", "succeeded"):
            logs = "Using seed: 7\n 50%|█████     | 14/28 [00:01<00:01, 9.8it/s]\n"
        if job.status == "succeeded":
            logs += "100%|██████████| 28/28 [00:02<00:00, 9.8it/s]\n"
        data = {
            "id": job.id, "model": job.model, "version": job.version, "status": job.status, "input": job.input,
            "output": self.output(job) if job.status == "succeeded" else None,
            "error": "CUDA out of memory" if job.status == "failed" else None,
            "logs": logs, "metrics": {"predict_time": 1.5, "total_time": 2.0} if done else {},
            "created_at": job.created_at, "started_at": job.created_at if job.status != "starting" else None,
            "completed_at": _now() if done else None, "urls": urls, "data_removed": False, "source": "api",
        }
        if job.kind == "trainings":
            data["destination"] = job.destination
        return data

    def deliver(self, job: Job, statuses: list[str]) -> None:
        for status in statuses:
            job.status = status
            raw = json.dumps(self.body(job)).encode()
            webhook_id = f"msg_{secrets.token_hex(8)}"
            timestamp = str(int(time.time()))
            headers = {"content-type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": timestamp,
                       "webhook-signature": sign_standard(WEBHOOK_SECRET, webhook_id, timestamp, raw)}
            httpx.post(job.webhook, content=raw, headers=headers, timeout=5)

    def wait_for_delivery(self, count: int, timeout: float = 5.0) -> list[tuple[dict[str, str], bytes]]:
        with self.delivered:
            self.delivered.wait_for(lambda: len(self.deliveries) >= count, timeout)
            return list(self.deliveries)

    async def _create(self, request: Request, kind: str, model: str, version: str, body: dict[str, Any]) -> Response:
        data = body.get("input") or {}
        if "[500]" in str(data.get("prompt", "")):
            return self._problem(500, "Internal Server Error", "Something went wrong")
        job = Job(kind, uuid.uuid4().hex[:26], model, version, data, body.get("webhook"), body.get("webhook_events_filter") or [],
                  destination=body.get("destination"), headers=dict(request.headers))
        self.jobs[job.id] = job
        task = None
        slow = "[slow]" in str(data.get("prompt", ""))
        if job.webhook and not slow:
            final = "failed" if "[fail]" in str(data.get("prompt")) else "succeeded"
            statuses = (["processing"] if "start" in job.events else []) + ([final] if "completed" in job.events else [])
            task = BackgroundTask(self.deliver, job, statuses)
        elif request.headers.get("prefer", "").startswith("wait") and not slow:
            self.finish(job)
        return JSONResponse(self.body(job), status_code=201, background=task)

    # -- routes -------------------------------------------------------------------------------

    async def create_by_model(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        if model not in KNOWN_MODELS:
            return self._problem(404, "Not found", f"Model {model} does not exist")
        return await self._create(request, "predictions", model, "hidden", await request.json())

    async def create_by_version(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        body = await request.json()
        if body.get("version") != VERSION:
            return self._problem(422, "Invalid version or not permitted",
                                 "The specified version does not exist (or perhaps you don't have permission to use it?)")
        return await self._create(request, "predictions", "acme/trained", VERSION, body)

    async def create_training(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        p = request.path_params
        if f"{p['owner']}/{p['name']}" != TRAINER or p["version"] != TRAINER_VERSION:
            return self._problem(404, "Not found", "Trainer version not found")
        body = await request.json()
        if not body.get("destination"):
            return self._problem(422, "Invalid destination", "destination is required")
        return await self._create(request, "trainings", TRAINER, TRAINER_VERSION, body)

    async def get(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return self._problem(404, "Not found", "Prediction not found")
        if "[badjson]" in str(job.input.get("prompt", "")):
            return Response(b"{not json", media_type="application/json")
        if job.status in ("starting", "processing") and "[slow]" not in str(job.input.get("prompt", "")):
            job.polls += 1
            if job.polls == 1:
                job.status = "processing"
            else:
                self.finish(job)
        return JSONResponse(self.body(job))

    async def cancel(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return self._problem(404, "Not found", "Prediction not found")
        self.cancels.append(job.id)
        if job.status in ("starting", "processing"):
            job.status = "canceled"
        return JSONResponse(self.body(job))

    async def upload(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        async with request.form() as form:
            upload = form["content"]
            data = await upload.read()
        file_id = uuid.uuid4().hex[:12]
        self.files[file_id] = (upload.filename, upload.content_type, data)
        return JSONResponse({
            "id": file_id, "name": upload.filename, "content_type": upload.content_type, "size": len(data),
            "etag": hashlib.md5(data).hexdigest(), "checksums": {"sha256": hashlib.sha256(data).hexdigest()},
            "metadata": {}, "created_at": _now(), "expires_at": None,
            "urls": {"get": f"{self.base}/files/uploads/{file_id}"},
        }, status_code=201)

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.startswith("uploads/"):
            _, content_type, data = self.files[name.removeprefix("uploads/")]
            return Response(data, media_type=content_type)
        if name.endswith(".png"):
            job_id, index = name.removesuffix(".png").split("/")
            job = self.jobs[job_id]
            side = 512 if job.input.get("megapixels") == "0.25" else 1024
            return Response(png(side, side, int(index)), media_type="image/png")
        return Response(b"WEIGHTS", media_type="application/x-tar")

    async def sink(self, request: Request) -> Response:
        body = await request.body()
        with self.delivered:
            self.deliveries.append((dict(request.headers), body))
            self.delivered.notify_all()
        return Response(status_code=200)
