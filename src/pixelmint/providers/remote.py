"""Shared machinery of the remote providers: the poll loop, image downloads, error mapping and
training archives. Backends (``fal``, ``replicate``, ``openai_images``) subclass
``RemoteProviderBase`` and implement ``submit``, ``status``, ``cancel``, ``_fetch_output``,
``_image_refs`` and the training half.

Polling (``wait``): the first status request goes out at once, then after
``PollPolicy.interval`` seconds (0.5 by default, ``PIXELMINT_PROVIDER_POLL_INTERVAL_SECONDS``),
each wait ×1.5 up to ``max_interval`` (5 s, ``PIXELMINT_PROVIDER_POLL_MAX_INTERVAL_SECONDS``).
A failing status request that is retryable (5xx, timeout) is tolerated ``max_status_failures``
times in a row. When the total passes the timeout (generation 600 s, training 2 h) the request is
cancelled at the provider and ``ProviderError(code="provider_timeout", retryable=True)`` raised;
when the caller is cancelled (the job was cancelled) the provider request is cancelled too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

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
    TrainingImage,
    TrainingRequest,
    WebhookEvent,
)

MAX_IMAGE_BYTES = 64 * 1024 * 1024
_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
# tqdm's bar, as the official Replicate clients parse it: " 45%|████▌     | 9/20 [00:02<00:03]"
_TQDM = re.compile(r"^\s*(?P<percentage>\d+)%\s*\|.+?\|\s*(?P<current>\d+)/(?P<total>\d+)")


@dataclass(frozen=True)
class PollPolicy:
    """Status polling schedule and deadlines, in seconds (see the module docstring)."""

    interval: float = 0.5
    max_interval: float = 5.0
    backoff: float = 1.5
    max_status_failures: int = 5
    generation_timeout: float = 600.0
    training_timeout: float = 7200.0

    @classmethod
    def from_settings(cls, settings: Any) -> PollPolicy:
        return cls(
            interval=settings.provider_poll_interval_seconds,
            max_interval=settings.provider_poll_max_interval_seconds,
            generation_timeout=settings.provider_generation_timeout_seconds,
            training_timeout=settings.provider_training_timeout_seconds,
        )


def parse_progress(lines: tuple[str, ...] | list[str]) -> int | None:
    """Percentage 0–100 from the last tqdm-style line (``" 45%|███  | 9/20"``), else None."""
    for line in reversed(lines):
        match = _TQDM.match(line)
        if match:
            return max(0, min(100, int(match["percentage"])))
    return None


def decode_image(data: bytes, seed: int) -> GeneratedImage:
    """Check that ``data`` is an image Pillow can read and describe it. Raises
    ``ProviderError(code="provider_bad_result")`` otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt = image.width, image.height, image.format
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ProviderError(f"provider returned data that is not an image ({exc})", code="provider_bad_result") from exc
    content_type = _CONTENT_TYPES.get(fmt or "")
    if content_type is None:
        raise ProviderError(f"provider returned an unsupported image format {fmt!r}", code="provider_bad_result")
    return GeneratedImage(data=data, content_type=content_type, width=width, height=height, seed=seed)


def decode_data_uri(uri: str) -> bytes:
    """Bytes of a ``data:<type>;base64,<…>`` URI (fal ``sync_mode``, small Replicate outputs)."""
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ProviderError("provider returned a data URI that is not base64", code="provider_bad_result")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError(f"provider returned an invalid data URI ({exc})", code="provider_bad_result") from exc


def http_status_error(
    provider: str,
    status: int,
    detail: str,
    *,
    during: str,
    credential_setting: str,
    model: str | None = None,
    model_source: str | None = None,
) -> ProviderError:
    """The ``ProviderError`` for an HTTP error status from a provider. ``during`` is ``"submit"``
    (a 404 there means the model is unknown) or another verb (a 404 means the request is)."""
    detail = (detail or "").strip()[:500]
    if status in (401, 403):
        return ProviderError(
            f"{provider} rejected the API credentials (HTTP {status}: {detail}); check {credential_setting}",
            code="provider_auth_failed",
        )
    if status == 404 and during == "submit":
        return ProviderError(
            f"{provider} has no model {model!r} (HTTP 404: {detail}); fix {model_source}",
            code="provider_model_not_found",
        )
    if status == 404:
        return ProviderError(f"{provider} does not know this request (HTTP 404: {detail})", code="provider_request_not_found")
    if status in (408, 409, 425, 429):
        return ProviderError(f"{provider} is busy (HTTP {status}: {detail})", code="provider_busy", retryable=True)
    if status >= 500:
        return ProviderError(f"{provider} failed (HTTP {status}: {detail})", code="provider_unavailable", retryable=True)
    return ProviderError(f"{provider} refused the request (HTTP {status}: {detail})", code="provider_invalid_request")


def transport_error(provider: str, exc: Exception) -> ProviderError:
    """A timeout or connection failure: retryable."""
    kind = "timed out" if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)) else "unreachable"
    code = "provider_timeout" if kind == "timed out" else "provider_unreachable"
    return ProviderError(f"{provider} {kind}: {exc.__class__.__name__} {exc}".strip(), code=code, retryable=True)


def bad_result(provider: str, what: str) -> ProviderError:
    return ProviderError(f"{provider} returned a malformed result: {what}", code="provider_bad_result")


def _safe_name(filename: str, index: int) -> tuple[str, str]:
    name = PurePosixPath(filename.replace("\\", "/")).name
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, "png"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or f"image_{index:03d}"
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix).lower() or "png"
    return stem, suffix


def training_archive(images: tuple[TrainingImage, ...] | list[TrainingImage]) -> bytes:
    """A zip of the training images (file names made safe and unique, order kept) with a
    ``<stem>.txt`` caption beside each image that has one — the input both fal's
    ``flux-lora-fast-training`` (``images_data_url``) and Replicate's LoRA trainers
    (``input_images``) take (protocols.md §1.8, imagegen.md §3)."""
    if not images:
        raise ProviderError("a training needs at least one image", code="provider_invalid_request")
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, image in enumerate(images):
            stem, suffix = _safe_name(image.filename, index)
            candidate, n = stem, 1
            while candidate.lower() in used:
                n += 1
                candidate = f"{stem}_{n}"
            used.add(candidate.lower())
            info = zipfile.ZipInfo(f"{candidate}.{suffix}", date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, image.data, compress_type=zipfile.ZIP_STORED)
            if image.caption:
                caption = zipfile.ZipInfo(f"{candidate}.txt", date_time=(2020, 1, 1, 0, 0, 0))
                archive.writestr(caption, image.caption.encode(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


class RemoteProviderBase:
    """Implements ``generate``/``wait``/``train``/``result`` and downloads on top of a backend's
    ``submit``/``status``/``cancel``/``_fetch_output``/``_image_refs``."""

    name = "remote"
    supports_webhooks = True
    supports_training = True

    def __init__(self, *, poll: PollPolicy | None = None, request_timeout: float = 30.0) -> None:
        self.poll = poll or PollPolicy()
        self.request_timeout = request_timeout
        self._http: httpx.AsyncClient | None = None

    # -- to implement -------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest, *, webhook_url: str | None = None) -> Submission:
        raise NotImplementedError

    async def status(self, handle: str) -> ProviderStatus:
        raise NotImplementedError

    async def cancel(self, handle: str) -> bool:
        raise NotImplementedError

    async def _fetch_output(self, handle: str) -> Any:
        """The model output of a finished request (fetched from the provider)."""
        raise NotImplementedError

    def _image_refs(self, output: Any, request: GenerationRequest | None) -> list[tuple[str, int]]:
        """``(url or data URI, seed)`` per image in ``output``; raises ``provider_bad_result``."""
        raise NotImplementedError

    def _output_of(self, status: ProviderStatus) -> Any:
        """The output when a status already carries it (Replicate), else None (fetch it)."""
        return None

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        raise NotImplementedError

    async def submit_training(self, request: TrainingRequest, *, webhook_url: str | None = None) -> Submission:
        raise ProviderError(f"{self.name} cannot train models", code="provider_unsupported")

    async def training_result(self, handle: str, *, output: Any = None) -> TrainingArtifact:
        raise ProviderError(f"{self.name} cannot train models", code="provider_unsupported")

    async def _submit_for_generate(self, request: GenerationRequest) -> Submission:
        return await self.submit(request, webhook_url=None)

    # -- shared -------------------------------------------------------------------------------

    async def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
    ) -> list[GeneratedImage]:
        """submit → poll → result (module docstring: schedule, timeout, cancellation)."""
        trace = trace if trace is not None else ProviderTrace()
        submission = await self._submit_for_generate(request)
        await trace.submitted(submission)
        if submission.images is not None:
            if progress is not None:
                await progress(100)
            return list(submission.images)
        return await self.wait(
            submission.handle, request=request, progress=progress, trace=trace, _first=submission.observed
        )

    async def wait(
        self,
        handle: str,
        *,
        request: GenerationRequest | None = None,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
        timeout: float | None = None,
        _first: ProviderStatus | None = None,
    ) -> list[GeneratedImage]:
        trace = trace if trace is not None else ProviderTrace()
        final = await self._poll(
            handle, progress=progress, trace=trace, timeout=timeout or self.poll.generation_timeout, first=_first
        )
        images = await self.result(handle, output=self._output_of(final), request=request)
        if progress is not None:
            await progress(100)
        return images

    async def train(
        self,
        request: TrainingRequest,
        *,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
    ) -> TrainingArtifact:
        """submit_training → poll (training timeout) → training_result."""
        trace = trace if trace is not None else ProviderTrace()
        submission = await self.submit_training(request, webhook_url=None)
        await trace.submitted(submission)
        final = await self._poll(
            submission.handle, progress=progress, trace=trace, timeout=self.poll.training_timeout,
            first=submission.observed,
        )
        artifact = await self.training_result(submission.handle, output=self._output_of(final))
        if progress is not None:
            await progress(100)
        return artifact

    async def result(
        self, handle: str, *, output: Any = None, request: GenerationRequest | None = None
    ) -> list[GeneratedImage]:
        if output is None:
            output = await self._fetch_output(handle)
        refs = self._image_refs(output, request)
        if not refs:
            raise bad_result(self.name, "no images in the output")
        return list(await asyncio.gather(*(self.download(url, seed) for url, seed in refs)))

    async def _poll(
        self,
        handle: str,
        *,
        progress: ProgressCallback | None,
        trace: ProviderTrace,
        timeout: float,
        first: ProviderStatus | None = None,
    ) -> ProviderStatus:
        """Poll until terminal; returns the SUCCEEDED status or raises for FAILED/CANCELED."""
        deadline = time.monotonic() + timeout
        interval = self.poll.interval
        failures = 0
        last_progress: int | None = None
        status: ProviderStatus | None = first
        try:
            while True:
                if status is None:
                    try:
                        status = await self.status(handle)
                        failures = 0
                    except ProviderError as exc:
                        failures += 1
                        if not exc.retryable or failures > self.poll.max_status_failures:
                            raise
                if status is not None:
                    await trace.observe(status)
                    if status.state.terminal:
                        break
                    if progress is not None and status.progress is not None and status.progress != last_progress:
                        last_progress = status.progress
                        await progress(min(status.progress, 99))  # 100 once the images are in
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self._cancel_quietly(handle)
                    raise ProviderError(
                        f"{self.name} request {handle} did not finish within {timeout:.0f} s "
                        "(PIXELMINT_PROVIDER_GENERATION_TIMEOUT_SECONDS / _TRAINING_TIMEOUT_SECONDS); cancelled it",
                        code="provider_timeout",
                        retryable=True,
                    )
                await asyncio.sleep(min(interval, remaining))
                interval = min(interval * self.poll.backoff, self.poll.max_interval)
                status = None
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_quietly(handle))
            raise
        if status.state is ProviderState.FAILED:
            raise ProviderError(
                f"{self.name} request {handle} failed: {status.error or 'no reason given'}",
                code=status.error_code or "provider_job_failed",
            )
        if status.state is ProviderState.CANCELED:
            raise ProviderError(f"{self.name} request {handle} was cancelled at the provider", code="provider_canceled")
        return status

    async def _cancel_quietly(self, handle: str) -> None:
        try:
            await asyncio.wait_for(self.cancel(handle), timeout=min(10.0, self.request_timeout))
        except Exception:  # best effort: the request may finish or time out at the provider
            pass

    @property
    def http(self) -> httpx.AsyncClient:
        """The client for downloads (outputs, JWKS), created on first use."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.request_timeout, follow_redirects=True)
        return self._http

    async def download(self, url: str, seed: int) -> GeneratedImage:
        """One output image: an http(s) URL (GET, at most ``MAX_IMAGE_BYTES``) or a data URI."""
        if not isinstance(url, str):
            raise bad_result(self.name, f"image reference {url!r} is not a string")
        if url.startswith("data:"):
            return decode_image(decode_data_uri(url), seed)
        if not url.startswith(("http://", "https://")):
            raise bad_result(self.name, f"image reference {url[:100]!r} is not a URL")
        try:
            async with self.http.stream("GET", url) as response:
                if response.status_code >= 400:
                    retryable = response.status_code >= 500 or response.status_code == 429
                    raise ProviderError(
                        f"{self.name} output {url} could not be downloaded (HTTP {response.status_code})",
                        code="provider_unavailable" if retryable else "provider_result_unavailable",
                        retryable=retryable,
                    )
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_IMAGE_BYTES:
                        raise bad_result(self.name, f"image {url} is larger than {MAX_IMAGE_BYTES} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise transport_error(self.name, exc) from exc
        return decode_image(b"".join(chunks), seed)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
