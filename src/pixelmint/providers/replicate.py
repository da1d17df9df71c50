"""``replicate``: Replicate predictions and trainings through the official ``replicate`` SDK
(protocols.md §2, §4.2).

Generation creates a prediction — ``POST /v1/models/{owner}/{name}/predictions`` for an
``owner/name`` model (official models, e.g. ``black-forest-labs/flux-dev-lora``), ``POST
/v1/predictions`` with ``version`` for ``owner/name:<version>`` or a bare version id (e.g. a
version a training produced). ``generate()`` sends ``Prefer: wait=N``
(``PIXELMINT_REPLICATE_WAIT_SECONDS``, 60; 0 turns it off) so a fast prediction comes back finished
in the create reply; otherwise it polls ``GET /v1/predictions/{id}``. ``submit(…, webhook_url=…)``
does not wait and asks for ``webhook_events_filter`` = ``PIXELMINT_REPLICATE_WEBHOOK_EVENTS``
(``start``, ``completed``). Output files are HTTPS URLs (or data URIs), downloaded with httpx;
Replicate deletes them after an hour, so fetch the result promptly.

Our parameters → input (FLUX models, the flux-dev-lora schema): resolution → the nearest
``aspect_ratio`` of Replicate's FLUX list and ``megapixels`` ``"0.25"`` (≤ ~512²) or ``"1"`` (the
trace notes when the size is not exact); ``num_outputs``; ``seed``; quality ``standard`` →
``num_inference_steps`` 28, ``hd`` → 40; one LoRA → ``lora_weights`` + ``lora_scale``;
``output_format: "png"``. Other models get ``width``/``height`` and ``negative_prompt``.
``GenerationRequest.options`` is merged over all of that.

Training zips the images and passes the archive as ``input_images`` (the SDK uploads it with
``POST /v1/files``) to ``POST /v1/models/{owner}/{name}/versions/{version}/trainings`` of
``PIXELMINT_REPLICATE_TRAINING_MODEL``, pushing to ``PIXELMINT_REPLICATE_TRAINING_DESTINATION``
(must exist). Its output ``{"version", "weights"}`` is a runnable version with the LoRA baked in.

Handles are ``"predictions/<id>"`` or ``"trainings/<id>"`` (a bare id is a prediction). Errors:
401/403 → ``provider_auth_failed`` (names ``PIXELMINT_REPLICATE_API_TOKEN``); 404 or a 422 about
the version at create → ``provider_model_not_found`` (names the catalog entry or
``PIXELMINT_REPLICATE_MODEL``); other 4xx → ``provider_invalid_request``; 429 and 5xx, timeouts and
network errors → retryable; a ``failed`` prediction → ``provider_job_failed``; a reply the SDK
cannot parse (e.g. status ``aborted``, which replicate 1.0.7 rejects) → ``provider_bad_result``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import httpx

from pixelmint.providers.base import (
    GenerationRequest,
    ProviderError,
    ProviderState,
    ProviderStatus,
    Submission,
    TrainingArtifact,
    TrainingRequest,
    WebhookEvent,
    WebhookVerificationError,
)
from pixelmint.providers.remote import (
    PollPolicy,
    RemoteProviderBase,
    bad_result,
    http_status_error,
    parse_progress,
    training_archive,
    transport_error,
)
from pixelmint.providers.webhooks import StandardWebhookVerifier

HD_STEPS, STANDARD_STEPS = 40, 28
FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
_STATES = {
    "starting": ProviderState.QUEUED,
    "processing": ProviderState.RUNNING,
    "succeeded": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
    "canceled": ProviderState.CANCELED,
    "aborted": ProviderState.CANCELED,
}
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


def _nearest_aspect(width: int, height: int) -> str:
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        a, b = ratio.split(":")
        return abs(math.log(int(a) / int(b)) - target)

    return min(FLUX_ASPECT_RATIOS, key=distance)


def replicate_input(request: GenerationRequest, ref: str) -> tuple[dict[str, Any], list[str]]:
    """The prediction input for ``request`` (module docstring) and notes on what changed."""
    notes: list[str] = []
    data: dict[str, Any] = {
        "prompt": request.prompt,
        "num_outputs": request.num_images,
        "seed": request.seed,
        "num_inference_steps": HD_STEPS if request.quality == "hd" else STANDARD_STEPS,
        "output_format": "png",
    }
    if "flux" in ref.lower():
        ratio = _nearest_aspect(request.width, request.height)
        megapixels = "0.25" if request.width * request.height <= 600 * 600 else "1"
        data |= {"aspect_ratio": ratio, "megapixels": megapixels}
        a, b = (int(x) for x in ratio.split(":"))
        if request.width * b != request.height * a or request.width * request.height not in (512 * 512, 1024 * 1024):
            notes.append(f"resolution {request.width}x{request.height} sent as aspect_ratio {ratio} at {megapixels} MP")
        if request.negative_prompt:
            notes.append("negativePrompt ignored: FLUX models take no negative prompt")
    else:
        data |= {"width": request.width, "height": request.height}
        if request.negative_prompt:
            data["negative_prompt"] = request.negative_prompt
    if len(request.loras) > 1:
        raise ProviderError(
            "replicate's LoRA models take one LoRA (lora_weights); this request has several",
            code="provider_unsupported",
        )
    if request.loras:
        data |= {"lora_weights": request.loras[0].path, "lora_scale": request.loras[0].scale}
    data.update(request.options)
    return data, notes


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ReplicateProvider(RemoteProviderBase):
    """Replicate predictions and trainings (module docstring)."""

    name = "replicate"
    supports_webhooks = True
    supports_training = True
    credential_setting = "PIXELMINT_REPLICATE_API_TOKEN"

    def __init__(
        self,
        *,
        api_token: str,
        base_url: str | None = None,
        model: str = "black-forest-labs/flux-dev-lora",
        training_model: str | None = None,
        training_destination: str | None = None,
        webhook_secret: str | None = None,
        webhook_events: tuple[str, ...] | list[str] = ("start", "completed"),
        wait_seconds: int = 60,
        webhook_tolerance_seconds: float = 300.0,
        poll: PollPolicy | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__(poll=poll, request_timeout=request_timeout)
        import replicate
        from pydantic import v1 as pydantic_v1
        from replicate.exceptions import ReplicateError

        self._client = replicate.Client(
            api_token=api_token,
            base_url=base_url.rstrip("/") if base_url else None,
            timeout=httpx.Timeout(request_timeout, connect=min(5.0, request_timeout)),
        )
        self._replicate_error = ReplicateError
        self._validation_error = pydantic_v1.ValidationError
        self.model = model
        self.training_model = training_model
        self.training_destination = training_destination
        self.webhook_events = list(webhook_events)
        self.wait_seconds = max(0, min(60, int(wait_seconds)))
        self._verifier = StandardWebhookVerifier(webhook_secret, tolerance_seconds=webhook_tolerance_seconds)

    @classmethod
    def from_settings(cls, settings: Any) -> ReplicateProvider:
        return cls(
            api_token=settings.replicate_api_token,
            base_url=settings.replicate_base_url,
            model=settings.replicate_model,
            training_model=settings.replicate_training_model,
            training_destination=settings.replicate_training_destination,
            webhook_secret=settings.replicate_webhook_secret,
            webhook_events=settings.replicate_webhook_events,
            wait_seconds=settings.replicate_wait_seconds,
            webhook_tolerance_seconds=settings.provider_webhook_tolerance_seconds,
            poll=PollPolicy.from_settings(settings),
            request_timeout=settings.provider_request_timeout_seconds,
        )

    # -- errors and objects -------------------------------------------------------------------

    def _error(self, exc: Exception, *, during: str, ref: str | None = None, source: str | None = None) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, self._replicate_error):
            status = exc.status or 500
            detail = exc.detail or exc.title or ""
            if during == "submit" and status == 422 and "version" in detail.lower():
                status = 404  # "Invalid version or not permitted": the model reference is wrong
            return http_status_error(
                self.name, status, detail, during=during, credential_setting=self.credential_setting,
                model=ref, model_source=source,
            )
        if isinstance(exc, (httpx.TransportError, httpx.TimeoutException, TimeoutError)):
            return transport_error(self.name, exc)
        if isinstance(exc, (self._validation_error, KeyError, TypeError, ValueError, json.JSONDecodeError)):
            return bad_result(self.name, f"{exc.__class__.__name__}: {exc}".replace("\n", " ")[:500])
        return ProviderError(f"{self.name}: {exc.__class__.__name__}: {exc}", code="provider_error")

    @staticmethod
    def _split(handle: str) -> tuple[str, str]:
        kind, sep, request_id = handle.partition("/")
        if sep and kind in ("predictions", "trainings"):
            return kind, request_id
        return "predictions", handle

    def _status_of(self, obj: Any) -> ProviderStatus:
        state = _STATES.get(obj.status)
        if state is None:
            raise bad_result(self.name, f"unknown status {obj.status!r}")
        logs = tuple((obj.logs or "").splitlines())
        raw = obj.dict()
        metrics = dict(getattr(obj, "metrics", None) or {})
        return ProviderStatus(
            state,
            progress=100 if state is ProviderState.SUCCEEDED else parse_progress(logs),
            logs=logs,
            error=str(obj.error) if obj.error else None,
            metrics=metrics,
            raw=raw,
        )

    def _submission(self, kind: str, obj: Any, notes: list[str]) -> Submission:
        status = self._status_of(obj)
        urls = obj.urls or {}
        return Submission(
            provider=self.name,
            request_id=obj.id,
            handle=f"{kind}/{obj.id}",
            state=status.state,
            submitted_at=_timestamp(obj.created_at) or dt.datetime.now(dt.UTC),
            status_url=urls.get("get"),
            cancel_url=urls.get("cancel"),
            web_url=urls.get("web"),
            observed=status,
            notes=tuple(notes),
            raw=status.raw,
        )

    def _output_of(self, status: ProviderStatus) -> Any:
        return status.raw.get("output") if status.state is ProviderState.SUCCEEDED else None

    # -- generation ---------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest, *, webhook_url: str | None = None) -> Submission:
        """Create a prediction (§2.1) with the webhook, without waiting."""
        return await self._create(request, webhook_url=webhook_url, wait=None)

    async def _submit_for_generate(self, request: GenerationRequest) -> Submission:
        return await self._create(request, webhook_url=None, wait=self.wait_seconds or None)

    async def _create(self, request: GenerationRequest, *, webhook_url: str | None, wait: int | None) -> Submission:
        ref = request.provider_model or self.model
        source = (
            "the reference model's providerModels['replicate'] in the catalog"
            if request.provider_model else "PIXELMINT_REPLICATE_MODEL"
        )
        data, notes = replicate_input(request, ref)
        params: dict[str, Any] = {}
        if webhook_url:
            params |= {"webhook": webhook_url, "webhook_events_filter": self.webhook_events}
        if wait:
            params["wait"] = wait
        try:
            if ":" in ref or _VERSION_ID.match(ref):
                version = ref.rpartition(":")[2]
                prediction = await self._client.predictions.async_create(version=version, input=data, **params)
            elif ref.count("/") == 1 and all(ref.split("/")):
                prediction = await self._client.models.predictions.async_create(model=ref, input=data, **params)
            else:
                raise ProviderError(
                    f"{ref!r} is not a Replicate model (owner/name, owner/name:version or a version id); fix {source}",
                    code="provider_model_not_found",
                )
        except Exception as exc:
            raise self._error(exc, during="submit", ref=ref, source=source) from exc
        return self._submission("predictions", prediction, notes)

    async def _get(self, handle: str) -> Any:
        kind, request_id = self._split(handle)
        namespace = self._client.trainings if kind == "trainings" else self._client.predictions
        try:
            return await namespace.async_get(request_id)
        except Exception as exc:
            raise self._error(exc, during="status") from exc

    async def status(self, handle: str) -> ProviderStatus:
        """GET ``/v1/predictions/{id}`` or ``/v1/trainings/{id}`` (§2.2, §2.5)."""
        obj = await self._get(handle)
        try:
            return self._status_of(obj)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._error(exc, during="status") from exc

    async def cancel(self, handle: str) -> bool:
        """POST ``…/{id}/cancel``: True unless the request had already finished."""
        kind, request_id = self._split(handle)
        namespace = self._client.trainings if kind == "trainings" else self._client.predictions
        try:
            obj = await namespace.async_cancel(request_id)
        except self._replicate_error as exc:
            if exc.status == 404:
                return False
            raise self._error(exc, during="cancel") from exc
        except Exception as exc:
            raise self._error(exc, during="cancel") from exc
        return obj.status not in ("succeeded", "failed")

    async def _fetch_output(self, handle: str) -> Any:
        status = await self.status(handle)
        if status.state is ProviderState.SUCCEEDED:
            return status.raw.get("output")
        if status.state.terminal:
            raise ProviderError(
                f"{self.name} request {handle} ended {status.state.value}: {status.error or 'no reason given'}",
                code="provider_job_failed" if status.state is ProviderState.FAILED else "provider_canceled",
            )
        raise ProviderError(f"{self.name} request {handle} has not finished", code="provider_not_ready", retryable=True)

    def _image_refs(self, output: Any, request: GenerationRequest | None) -> list[tuple[str, int]]:
        items = [output] if isinstance(output, str) else output
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise bad_result(self.name, f"output {str(output)[:100]!r} is not a list of file URLs")
        seed = request.seed if request is not None else 0
        return [(item, seed) for item in items]

    # -- webhooks -----------------------------------------------------------------------------

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Standard Webhooks HMAC check (webhooks.py, §2.4); the body is the prediction (or
        training) object. ``delivery_id`` is ``webhook-id``, the same on every retry."""
        webhook_id, timestamp = self._verifier.verify(headers, body)
        try:
            data = json.loads(body)
            request_id, status = str(data["id"]), data["status"]
            state = _STATES[status]
        except (ValueError, KeyError, TypeError):
            raise WebhookVerificationError("replicate webhook body is not a prediction", reason="bad_payload") from None
        return WebhookEvent(
            provider=self.name,
            request_id=request_id,
            delivery_id=webhook_id,
            state=state,
            output=data.get("output") if state is ProviderState.SUCCEEDED else None,
            error=str(data["error"]) if data.get("error") else None,
            logs=tuple(str(data.get("logs") or "").splitlines()),
            timestamp=dt.datetime.fromtimestamp(timestamp, dt.UTC),
            payload=data,
        )

    # -- training -----------------------------------------------------------------------------

    async def submit_training(self, request: TrainingRequest, *, webhook_url: str | None = None) -> Submission:
        """Create a training (§2.5): ``input_images`` = the zip (uploaded by the SDK via
        ``POST /v1/files``), ``trigger_word``, ``steps``."""
        trainer = self.training_model
        owner_name, _, version = (trainer or "").partition(":")
        if not trainer or not version or owner_name.count("/") != 1:
            raise ProviderError(
                "no Replicate trainer configured: set PIXELMINT_REPLICATE_TRAINING_MODEL to 'owner/name:<version id>'",
                code="provider_not_configured",
            )
        destination = request.destination or self.training_destination
        if not destination:
            raise ProviderError(
                "no Replicate destination model: set PIXELMINT_REPLICATE_TRAINING_DESTINATION to an existing 'owner/model'",
                code="provider_not_configured",
            )
        archive = io.BytesIO(training_archive(request.images))
        archive.name = "training_images.zip"
        data: dict[str, Any] = {"input_images": archive, "trigger_word": request.trigger_word, "steps": request.steps}
        data.update(request.options)
        params: dict[str, Any] = {"destination": destination}
        if webhook_url:
            params |= {"webhook": webhook_url, "webhook_events_filter": self.webhook_events}
        try:
            training = await self._client.trainings.async_create(model=owner_name, version=version, input=data, **params)
        except Exception as exc:
            raise self._error(exc, during="submit", ref=trainer, source="PIXELMINT_REPLICATE_TRAINING_MODEL") from exc
        return self._submission("trainings", training, [])

    async def aclose(self) -> None:
        await super().aclose()
        # replicate.Client has no close(): close its lazily made httpx client if there is one.
        sdk_http = getattr(self._client, "_Client__async_client", None)
        if isinstance(sdk_http, httpx.AsyncClient):
            await sdk_http.aclose()

    async def training_result(self, handle: str, *, output: Any = None) -> TrainingArtifact:
        """The trained version (``output.version``, generate with it as ``provider_model``) and
        its weights URL (``output.weights``)."""
        if output is None:
            output = await self._fetch_output(handle)
        if not isinstance(output, Mapping) or not isinstance(output.get("version"), str) or not isinstance(output.get("weights"), str):
            raise bad_result(self.name, f"training output {str(output)[:200]!r} lacks version and weights")
        return TrainingArtifact(
            provider=self.name,
            weights_url=output["weights"],
            provider_model=output["version"],
            lora_path=None,
            trigger_word=None,
            raw=dict(output),
        )
