"""``openai``: any OpenAI-compatible images endpoint through the official ``openai`` SDK
(protocols.md §3, §4.3): ``POST {PIXELMINT_OPENAI_BASE_URL}/images/generations``.

The API is synchronous: ``submit`` makes the call and returns a ``Submission`` that is already
SUCCEEDED with its images (decoded from ``b64_json`` or downloaded from ``url`` with httpx), so the
worker simply calls ``generate``. ``status``/``result`` answer from a small in-process cache of
recent results; there is no cancel and no webhook. The SDK retries 408/409/429/5xx itself
(``PIXELMINT_OPENAI_MAX_RETRIES``, 2) within ``PIXELMINT_OPENAI_TIMEOUT_SECONDS`` per attempt.

Our parameters → request (model ``PIXELMINT_OPENAI_MODEL`` or the reference model's openai
model): ``n`` = number of images; ``size``: dall-e-2 → the nearest of 256/512/1024 squares,
dall-e-3 → 1024x1024, 1792x1024 or 1024x1792, gpt-image-1* → 1024x1024, 1536x1024 or 1024x1536 by
aspect, any other model (gpt-image-2, compatible servers) → exactly ``WxH``; ``quality``: hd →
``high`` (``hd`` for dall-e-3), standard → ``medium`` (``standard`` for dall-e-3), none for
dall-e-2; ``response_format: b64_json`` for dall-e models only (GPT image models always return
base64 and reject the field). The negative prompt is appended as ``"Avoid: …"``; seeds and LoRAs
are not supported (a LoRA is an error; the seed is recorded but has no effect — the trace notes it).

Errors: 401/403 → ``provider_auth_failed`` (names ``PIXELMINT_OPENAI_API_KEY``); 404, or 400 about
the model → ``provider_model_not_found`` (names the catalog entry or ``PIXELMINT_OPENAI_MODEL``);
other 4xx → ``provider_invalid_request``; 429 (except ``insufficient_quota``), 5xx, timeouts and
network errors → retryable; a reply without usable images → ``provider_bad_result``.
"""

from __future__ import annotations

import base64
import binascii
import math
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from pixelmint.providers.base import (
    GeneratedImage,
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderState,
    ProviderStatus,
    ProviderTrace,
    Submission,
    TrainingArtifact,
    TrainingRequest,
    WebhookEvent,
    WebhookVerificationError,
)
from pixelmint.providers.remote import RemoteProviderBase, bad_result, decode_image, http_status_error, transport_error

CACHE_SIZE = 32
_GPT_IMAGE_1_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
_DALLE3_SIZES = ((1024, 1024), (1792, 1024), (1024, 1792))


def _by_aspect(width: int, height: int, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    target = math.log(width / height)
    return min(sizes, key=lambda size: abs(math.log(size[0] / size[1]) - target))


def openai_arguments(request: GenerationRequest, model: str) -> tuple[dict[str, Any], list[str]]:
    """``images.generate`` keyword arguments for ``request`` (module docstring) and notes."""
    if request.loras:
        raise ProviderError("OpenAI-compatible image endpoints cannot apply LoRA weights", code="provider_unsupported")
    notes = ["seed not supported by the OpenAI images API: images are not reproducible"]
    name = model.lower()
    prompt = request.prompt
    if request.negative_prompt:
        prompt = f"{prompt}\n\nAvoid: {request.negative_prompt}"
        notes.append("negativePrompt appended to the prompt as 'Avoid: …'")
    arguments: dict[str, Any] = {"model": model, "prompt": prompt, "n": request.num_images}
    if name.startswith("dall-e-2"):
        side = min((1024, 512, 256), key=lambda s: abs(s - max(request.width, request.height)))  # ties: larger
        width, height = side, side
        arguments["response_format"] = "b64_json"
    elif name.startswith("dall-e-3"):
        width, height = _by_aspect(request.width, request.height, _DALLE3_SIZES)
        arguments |= {"quality": "hd" if request.quality == "hd" else "standard", "response_format": "b64_json"}
    elif name.startswith("gpt-image-1"):
        width, height = _by_aspect(request.width, request.height, _GPT_IMAGE_1_SIZES)
        arguments["quality"] = "high" if request.quality == "hd" else "medium"
    else:
        width, height = request.width, request.height
        arguments["quality"] = "high" if request.quality == "hd" else "medium"
    arguments["size"] = f"{width}x{height}"
    if (width, height) != (request.width, request.height):
        notes.append(f"resolution {request.width}x{request.height} sent as {width}x{height}, a size {model} supports")
    arguments.update(request.options)
    return arguments, notes


class OpenAIImagesProvider(RemoteProviderBase):
    """OpenAI-compatible ``/v1/images/generations`` (module docstring)."""

    name = "openai"
    supports_webhooks = False
    supports_training = False
    credential_setting = "PIXELMINT_OPENAI_API_KEY"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-image-1",
        timeout: float = 300.0,
        max_retries: int = 2,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__(request_timeout=request_timeout)
        import openai

        self._openai = openai
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self.model = model
        self._results: OrderedDict[str, tuple[GeneratedImage, ...]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Any) -> OpenAIImagesProvider:
        return cls(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            timeout=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
            request_timeout=settings.provider_request_timeout_seconds,
        )

    def _error(self, exc: Exception, *, model: str, source: str) -> ProviderError:
        openai = self._openai
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            code = (getattr(exc, "code", None) or "") or ""
            param = getattr(exc, "param", None) or ""
            if status == 400 and (param == "model" or code in ("model_not_found", "invalid_model")):
                status = 404
            if status == 429 and code == "insufficient_quota":
                return ProviderError(
                    f"openai quota exhausted (HTTP 429 insufficient_quota: {exc.message}); check the account behind "
                    f"{self.credential_setting}",
                    code="provider_quota_exhausted",
                )
            return http_status_error(
                self.name, status, str(exc.message), during="submit", credential_setting=self.credential_setting,
                model=model, model_source=source,
            )
        if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
            return transport_error(self.name, exc)
        if isinstance(exc, (openai.APIResponseValidationError, ValueError, TypeError, KeyError)):
            return bad_result(self.name, f"{exc.__class__.__name__}: {exc}")
        return ProviderError(f"{self.name}: {exc.__class__.__name__}: {exc}", code="provider_error")

    async def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
    ) -> list[GeneratedImage]:
        """One synchronous call (``submit``)."""
        trace = trace if trace is not None else ProviderTrace()
        submission = await self.submit(request)
        await trace.submitted(submission)
        await trace.observe(submission.observed or ProviderStatus(ProviderState.SUCCEEDED))
        if progress is not None:
            await progress(100)
        return list(submission.images or ())

    async def submit(self, request: GenerationRequest, *, webhook_url: str | None = None) -> Submission:
        """Call ``images.generate`` and return the finished submission (``webhook_url`` unused)."""
        model = request.provider_model or self.model
        source = "the reference model's providerModels['openai'] in the catalog" if request.provider_model else "PIXELMINT_OPENAI_MODEL"
        arguments, notes = openai_arguments(request, model)
        try:
            response = await self._client.images.generate(**arguments)
        except Exception as exc:
            raise self._error(exc, model=model, source=source) from exc
        data = getattr(response, "data", None)
        if not isinstance(data, list) or not data:
            raise bad_result(self.name, "no 'data' images in the reply")
        images = []
        for index, item in enumerate(data):
            b64 = getattr(item, "b64_json", None)
            url = getattr(item, "url", None)
            if isinstance(b64, str) and b64:
                try:
                    raw = base64.b64decode(b64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise bad_result(self.name, f"image {index} b64_json is not base64") from exc
                images.append(decode_image(raw, request.seed))
            elif isinstance(url, str) and url:
                images.append(await self.download(url, request.seed))
            else:
                raise bad_result(self.name, f"image {index} has neither b64_json nor url")
        request_id = getattr(response, "_request_id", None) or uuid.uuid4().hex
        handle = f"openai:{request_id}"
        self._results[handle] = tuple(images)
        while len(self._results) > CACHE_SIZE:
            self._results.popitem(last=False)
        usage = getattr(response, "usage", None)
        metrics = {"usage": usage.model_dump()} if usage is not None and hasattr(usage, "model_dump") else {}
        observed = ProviderStatus(ProviderState.SUCCEEDED, progress=100, metrics=metrics)
        return Submission(
            provider=self.name, request_id=request_id, handle=handle, state=ProviderState.SUCCEEDED,
            images=tuple(images), observed=observed, notes=tuple(notes),
            raw={"created": getattr(response, "created", None), "count": len(images)},
        )

    async def status(self, handle: str) -> ProviderStatus:
        if handle in self._results:
            return ProviderStatus(ProviderState.SUCCEEDED, progress=100)
        raise ProviderError(
            f"openai result {handle} is not held by this process (synchronous API)", code="provider_request_not_found"
        )

    async def result(
        self, handle: str, *, output: Any = None, request: GenerationRequest | None = None
    ) -> list[GeneratedImage]:
        await self.status(handle)
        return list(self._results[handle])

    async def wait(self, handle: str, **_: Any) -> list[GeneratedImage]:
        return await self.result(handle)

    async def cancel(self, handle: str) -> bool:
        return False  # a synchronous call has finished by the time anyone has its handle

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        raise WebhookVerificationError("the openai provider sends no webhooks", reason="not_configured", status_code=404)

    async def submit_training(self, request: TrainingRequest, *, webhook_url: str | None = None) -> Submission:
        raise ProviderError("OpenAI-compatible image endpoints cannot train models", code="provider_unsupported")

    async def training_result(self, handle: str, *, output: Any = None) -> TrainingArtifact:
        raise ProviderError("OpenAI-compatible image endpoints cannot train models", code="provider_unsupported")

    async def aclose(self) -> None:
        await super().aclose()
        await self._client.close()
