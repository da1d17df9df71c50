"""The provider interface: what a generation backend is given and what it returns."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pixelmint.kit.errors import PixelmintError

ProgressCallback = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class GenerationRequest:
    """One text-to-image request. Sizes in pixels; ``seed`` is the first image's seed, image ``i``
    uses ``(seed + i) mod 2^32`` (the A1111/ComfyUI batch convention)."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_images: int
    seed: int
    quality: str
    model_key: str  # reference model id, or "custom:<id>:v<version>"
    provider_model: str | None = None
    style: dict[str, Any] = field(default_factory=dict)
    # LoRA weights applied at generation (remote providers), e.g. a custom model's trained file.
    loras: tuple[LoraWeight, ...] = ()
    # Provider-specific input merged over the mapped arguments last (e.g. {"guidance_scale": 4}).
    options: Mapping[str, Any] = field(default_factory=dict)

    def image_seed(self, index: int) -> int:
        return (self.seed + index) % 2**32


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str
    width: int
    height: int
    seed: int


class ProviderError(Exception):
    """A provider failed. ``retryable`` says whether trying again can help (5xx, timeouts)."""

    def __init__(self, message: str, *, code: str = "provider_error", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class Provider(Protocol):
    name: str

    async def generate(
        self, request: GenerationRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]: ...


# --- Asynchronous (remote) providers -------------------------------------------------------------
#
# A remote provider runs a generation or a training somewhere else: ``submit`` hands it over and
# returns a ``Submission``; the outcome arrives by polling ``status`` or by a signed webhook
# (``verify_webhook``); ``result`` / ``training_result`` fetch the output. ``generate`` (and
# ``train``) chain the three for a caller that just wants the images. Protocol details per backend:
# ../shared/reference/protocols.md (§1 fal, §2 Replicate, §3 OpenAI, §4 the SDKs).


@dataclass(frozen=True)
class LoraWeight:
    """A LoRA to apply: ``path`` is a URL (or provider-specific name) of a ``.safetensors`` file;
    ``scale`` its weight (1.0 = as trained; fal ``loras[].scale``, Replicate ``lora_scale``)."""

    path: str
    scale: float = 1.0


class ProviderState(enum.StrEnum):
    """Our vocabulary for a provider request's state. fal IN_QUEUE → queued, IN_PROGRESS →
    running, COMPLETED → succeeded (or failed when it carries an error); Replicate starting →
    queued, processing → running, succeeded/failed/canceled as is, aborted → canceled."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (ProviderState.SUCCEEDED, ProviderState.FAILED, ProviderState.CANCELED)


@dataclass(frozen=True)
class Submission:
    """A request accepted by a provider.

    ``request_id`` is the provider's own id: webhooks carry it, so store it on the job to find the
    job when one arrives. ``handle`` is what ``status``/``result``/``cancel``/``training_result``
    take (it also names the endpoint: fal ``"<app>:<id>"``, Replicate ``"predictions/<id>"`` or
    ``"trainings/<id>"``); store it too, to resume polling after a worker restart. A synchronous
    provider (OpenAI) returns ``state=SUCCEEDED`` with ``images`` already set."""

    provider: str
    request_id: str
    handle: str
    state: ProviderState = ProviderState.QUEUED
    submitted_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    status_url: str | None = None
    cancel_url: str | None = None
    web_url: str | None = None  # a page showing the request and its logs (Replicate)
    images: tuple[GeneratedImage, ...] | None = None
    # The status the submit reply already told (Replicate returns the prediction; with
    # ``Prefer: wait`` it may be finished), so the first poll can be skipped.
    observed: ProviderStatus | None = None
    notes: tuple[str, ...] = ()  # our parameters this provider could not take (see ProviderTrace)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ProviderStatus:
    """One observation of a request. ``progress`` is 0–100 when the provider says (parsed from
    tqdm-style log lines, as the official clients do), else None; ``logs`` holds all log lines so
    far; ``metrics`` the provider's timings (fal ``inference_time``, Replicate ``predict_time``,
    seconds); ``error`` a message when ``state`` is FAILED."""

    state: ProviderState
    progress: int | None = None
    queue_position: int | None = None
    logs: tuple[str, ...] = ()
    error: str | None = None
    error_code: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class WebhookEvent:
    """A verified provider callback.

    ``request_id`` matches ``Submission.request_id``. ``delivery_id`` is the key to store the raw
    event under so a redelivery is handled once (Replicate's ``webhook-id``, the same on every
    retry; fal sends one completion per request, so ``"<request_id>:<status>"``). ``output`` is the
    model output when ``state`` is SUCCEEDED; pass it to ``result(handle, output=…)`` or
    ``training_result(handle, output=…)`` to skip a fetch. ``payload`` is the whole JSON body."""

    provider: str
    request_id: str
    delivery_id: str
    state: ProviderState
    output: Any = None
    error: str | None = None
    logs: tuple[str, ...] = ()
    timestamp: dt.datetime | None = None
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)


class WebhookVerificationError(PixelmintError):
    """A callback whose signature, timestamp or body does not check out: answer it with this
    status and never act on it. ``reason`` is one of ``missing_header``, ``bad_signature`` (also:
    signed by a key not in the JWKS), ``stale_timestamp``, ``bad_payload``, ``not_configured``
    (503) and ``keys_unavailable`` (the JWKS could not be fetched: 503, so the provider retries)."""

    status_code = 400
    code = "invalid_webhook"

    def __init__(self, message: str, *, reason: str, status_code: int | None = None) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason
        if status_code is not None:
            self.status_code = status_code


@dataclass(frozen=True)
class TrainingImage:
    """One training image as uploaded (PNG/JPEG/WebP bytes). ``caption``, when given, is written
    next to it in the archive as ``<stem>.txt`` (fal §1.8 and Replicate trainers read those)."""

    filename: str
    data: bytes
    caption: str | None = None


@dataclass(frozen=True)
class TrainingRequest:
    """A LoRA training. ``provider_model`` is the reference model's model at this provider (the
    model the LoRA will be used with, e.g. ``fal-ai/flux-lora``); the trainer itself comes from
    settings (``PIXELMINT_FAL_TRAINING_MODEL``, ``PIXELMINT_REPLICATE_TRAINING_MODEL``).
    ``destination`` is Replicate's ``owner/model`` receiving the trained version (default
    ``PIXELMINT_REPLICATE_TRAINING_DESTINATION``). ``options`` is merged over the trainer input."""

    images: tuple[TrainingImage, ...]
    trigger_word: str
    steps: int
    model_key: str  # "custom:<id>:v<version>", for logs and file names
    provider_model: str | None = None
    is_style: bool = False
    destination: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingArtifact:
    """What a finished training produced: store it as the custom model version's ``artifact``
    (``as_dict``). Generate with it by setting ``GenerationRequest.provider_model`` to
    ``provider_model`` and, when ``lora_path`` is set, ``loras=(LoraWeight(lora_path, scale),)``
    (fal: the LoRA file is applied at generation; Replicate: the trained version has the LoRA
    baked in, so ``lora_path`` is None)."""

    provider: str
    weights_url: str
    provider_model: str | None
    lora_path: str | None
    trigger_word: str | None
    config_url: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "weightsUrl": self.weights_url,
            "configUrl": self.config_url,
            "providerModel": self.provider_model,
            "loraPath": self.lora_path,
            "triggerWord": self.trigger_word,
        }


@dataclass
class ProviderTrace:
    """What a remote call did, for the job record; filled in as it goes, so it is useful after a
    failure too. Pass one to ``generate``/``wait``/``train``; read ``as_dict()`` afterwards.

    ``on_submit`` is awaited right after the provider accepted the request (persist
    ``handle``/``request_id`` then, so a restarted worker resumes with ``wait`` instead of paying
    twice); ``on_logs`` is awaited with each batch of new log lines (e.g. into ``job_logs``)."""

    on_submit: Callable[[Submission], Awaitable[None]] | None = None
    on_logs: Callable[[list[str]], Awaitable[None]] | None = None
    provider: str | None = None
    request_id: str | None = None
    handle: str | None = None
    web_url: str | None = None
    submitted_at: dt.datetime | None = None
    started_at: dt.datetime | None = None  # first seen running
    completed_at: dt.datetime | None = None  # first seen terminal
    polls: int = 0
    logs: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # our parameters the provider could not take

    async def submitted(self, submission: Submission) -> None:
        self.provider, self.request_id, self.handle = submission.provider, submission.request_id, submission.handle
        self.web_url = submission.web_url
        self.submitted_at = self.submitted_at or submission.submitted_at
        self.notes.extend(note for note in submission.notes if note not in self.notes)
        if self.on_submit is not None:
            await self.on_submit(submission)

    async def observe(self, status: ProviderStatus) -> None:
        """Record one status: timings, metrics and new log lines (``on_logs`` gets only those)."""
        now = dt.datetime.now(dt.UTC)
        self.polls += 1
        if status.state is not ProviderState.QUEUED and self.started_at is None:
            self.started_at = now
        if status.state.terminal and self.completed_at is None:
            self.completed_at = now
        self.metrics.update(status.metrics)
        if len(status.logs) > len(self.logs):
            new = list(status.logs[len(self.logs):])
            self.logs.extend(new)
            if self.on_logs is not None:
                await self.on_logs(new)

    def as_dict(self) -> dict[str, Any]:
        """JSON for the job (camelCase; times ISO-8601; ``queueSeconds``/``runSeconds`` as seen by
        our polls, ``metrics`` as the provider reports them)."""

        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        def span(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
            return round((b - a).total_seconds(), 3) if a and b else None

        return {
            "provider": self.provider,
            "requestId": self.request_id,
            "handle": self.handle,
            "webUrl": self.web_url,
            "submittedAt": iso(self.submitted_at),
            "startedAt": iso(self.started_at),
            "completedAt": iso(self.completed_at),
            "queueSeconds": span(self.submitted_at, self.started_at),
            "runSeconds": span(self.started_at, self.completed_at),
            "polls": self.polls,
            "metrics": dict(self.metrics),
            "notes": list(self.notes),
            "logLines": len(self.logs),
        }


@runtime_checkable
class RemoteProvider(Protocol):
    """The full surface of a remote backend (fal, Replicate, OpenAI-compatible). Every method
    raises ``ProviderError`` (``retryable`` for 5xx, 429, timeouts and network errors; not for
    bad credentials, unknown models, invalid input, failed or malformed results)."""

    name: str
    supports_webhooks: bool
    supports_training: bool

    async def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
    ) -> list[GeneratedImage]:
        """submit + poll ``status`` with backoff + ``result``; cancels at the provider if the
        caller is cancelled or the generation timeout passes."""
        ...

    async def submit(self, request: GenerationRequest, *, webhook_url: str | None = None) -> Submission: ...

    async def status(self, handle: str) -> ProviderStatus: ...

    async def result(
        self, handle: str, *, output: Any = None, request: GenerationRequest | None = None
    ) -> list[GeneratedImage]:
        """Download the images (httpx). ``output``: a webhook's ``WebhookEvent.output`` (no fetch
        from the provider then); ``request``: fills seeds where the provider reports none."""
        ...

    async def wait(
        self,
        handle: str,
        *,
        request: GenerationRequest | None = None,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
        timeout: float | None = None,
    ) -> list[GeneratedImage]:
        """Poll an existing submission to the end and return its images (resume after restart)."""
        ...

    async def cancel(self, handle: str) -> bool:
        """Ask the provider to stop; True if it accepted, False if it had already finished."""
        ...

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Check a callback's signature over the exact raw ``body``; raises
        ``WebhookVerificationError``."""
        ...

    async def submit_training(self, request: TrainingRequest, *, webhook_url: str | None = None) -> Submission: ...

    async def training_result(self, handle: str, *, output: Any = None) -> TrainingArtifact: ...

    async def train(
        self,
        request: TrainingRequest,
        *,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
    ) -> TrainingArtifact: ...

    async def aclose(self) -> None: ...
