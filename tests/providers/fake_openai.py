"""A local OpenAI-compatible images endpoint (protocols.md §3): ``POST /v1/images/generations``
with the documented error bodies. It checks what the real API checks that our mapping must get
right: GPT image models reject ``response_format`` and take only their sizes; dall-e-2/3 return
``url`` unless ``b64_json`` is asked for.

Prompts: ``[500]`` → HTTP 500, ``[badjson]`` → a 200 body that is not JSON, ``[empty]`` → no
images, ``[notimage]`` → base64 of bytes that are not an image, ``[quota]`` → 429
insufficient_quota.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.providers.localserver import png

GOOD_KEY = "sk-good"
MODELS = {"gpt-image-1", "gpt-image-2", "dall-e-2", "dall-e-3"}
GPT_IMAGE_1_SIZES = {"auto", "1024x1024", "1536x1024", "1024x1536"}


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status)


class FakeOpenAI:
    def __init__(self) -> None:
        self.base = ""
        self.calls: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/v1/images/generations", self.generate, methods=["POST"]),
            Route("/files/{name}", self.file, methods=["GET"]),
        ])

    async def generate(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {GOOD_KEY}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        body = await request.json()
        self.calls.append(body)
        model = body.get("model", "dall-e-2")
        prompt = body.get("prompt", "")
        if model not in MODELS:
            return _error(404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found")
        if "[500]" in prompt:
            return _error(500, "The server had an error while processing your request.", type_="server_error")
        if "[quota]" in prompt:
            return _error(429, "You exceeded your current quota.", type_="insufficient_quota", code="insufficient_quota")
        if "[badjson]" in prompt:
            return Response(b"<html>bad gateway</html>", media_type="application/json")
        size = body.get("size", "1024x1024")
        if model.startswith("gpt-image"):
            if "response_format" in body:
                return _error(400, "Unknown parameter: 'response_format'.", param="response_format", code="unknown_parameter")
            if model == "gpt-image-1" and size not in GPT_IMAGE_1_SIZES:
                return _error(400, f"Invalid value: '{size}'.", param="size", code="invalid_value")
        if "[empty]" in prompt:
            return JSONResponse({"created": int(time.time()), "data": []})
        width, height = (int(v) for v in size.split("x"))
        items = []
        for i in range(int(body.get("n", 1))):
            data = b"not an image at all" if "[notimage]" in prompt else png(width, height, i)
            if model.startswith("dall-e") and body.get("response_format", "url") == "url":
                items.append({"url": f"{self.base}/files/{width}x{height}-{i}.png", "revised_prompt": prompt})
            else:
                items.append({"b64_json": base64.b64encode(data).decode()})
        reply: dict[str, Any] = {"created": int(time.time()), "data": items}
        if model.startswith("gpt-image"):
            reply["usage"] = {"input_tokens": 10, "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                              "output_tokens": 100, "total_tokens": 110}
        return JSONResponse(reply, headers={"x-request-id": "req_fake123"})

    async def file(self, request: Request) -> Response:
        size, index = request.path_params["name"].removesuffix(".png").split("-")
        width, height = (int(v) for v in size.split("x"))
        return Response(png(width, height, int(index)), media_type="image/png")
