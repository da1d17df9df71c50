"""``fal``: fal.ai's queue API through the official ``fal-client`` SDK (protocols.md §1, §4.1).

Generation submits to ``fal-ai/flux-lora`` (or the reference model's fal model) with
``AsyncClient.submit`` (``?fal_webhook=`` when a webhook URL is given), polls
``…/requests/{id}/status?logs=1`` and GETs ``…/requests/{id}`` for the output
(``images[].url``, ``seed``), then downloads the images. Training zips the images, uploads the
archive with ``AsyncClient.upload`` (fal CDN) and submits ``fal-ai/flux-lora-fast-training`` with
``images_data_url``; its output's ``diffusers_lora_file.url`` is the LoRA to pass to flux-lora.

Our parameters → flux-lora input (§1.9): resolution → ``image_size: {width, height}``;
``num_images``; ``seed``; quality ``standard`` → ``num_inference_steps`` 28 (fal's default),
``hd`` → 40; LoRAs → ``loras: [{path, scale}]``; ``output_format: "png"``. The negative prompt is
sent as ``negative_prompt`` only to non-FLUX models (FLUX takes none; the trace notes the drop).
``GenerationRequest.options`` is merged over all of that.

The SDK has no base-URL argument: ``PIXELMINT_FAL_BASE_URL`` / ``_REST_URL`` / ``_CDN_URL`` are
applied by setting ``fal_client.client.QUEUE_URL_FORMAT`` / ``REST_URL`` / ``CDN_URL`` (protocols.md
§4.1, the SDK reads them at call time). They are process-wide: one fal configuration per process.

Handles are ``"<app>:<request id>"``; a bare request id is taken as one of ``PIXELMINT_FAL_MODEL``.
Errors: 401/403 → ``provider_auth_failed`` (names ``PIXELMINT_FAL_KEY``); 404 at submit →
``provider_model_not_found`` (names the catalog entry or ``PIXELMINT_FAL_MODEL``); 422 →
``provider_invalid_request``; 408/409/429 → retryable ``provider_busy``; 5xx, timeouts and network
errors → retryable; a COMPLETED status with an ``error`` → ``provider_job_failed``.
"""

from __future__ import annotations

import datetime as dt
import json
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
from pixelmint.providers.webhooks import FalWebhookVerifier

HD_STEPS, STANDARD_STEPS = 40, 28
DEFAULT_JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"


def fal_arguments(request: GenerationRequest, app: str) -> tuple[dict[str, Any], list[str]]:
    """The flux-lora input for ``request`` (module docstring) and notes on what was dropped."""
    notes: list[str] = []
    arguments: dict[str, Any] = {
        "prompt": request.prompt,
        "image_size": {"width": request.width, "height": request.height},
        "num_images": request.num_images,
        "seed": request.seed,
        "num_inference_steps": HD_STEPS if request.quality == "hd" else STANDARD_STEPS,
        "output_format": "png",
        "enable_safety_checker": True,
    }
    if request.loras:
        arguments["loras"] = [{"path": lora.path, "scale": lora.scale} for lora in request.loras]
    if request.negative_prompt:
        if "flux" in app.lower():
            notes.append("negativePrompt ignored: FLUX models take no negative prompt")
        else:
            arguments["negative_prompt"] = request.negative_prompt
    arguments.update(request.options)
    return arguments, notes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:80] or "training"


class FalProvider(RemoteProviderBase):
    """fal.ai queue API (module docstring)."""

    name = "fal"
    supports_webhooks = True
    supports_training = True
    credential_setting = "PIXELMINT_FAL_KEY"

    def __init__(
        self,
        *,
        key: str,
        model: str = "fal-ai/flux-lora",
        training_model: str = "fal-ai/flux-lora-fast-training",
        base_url: str | None = None,
        rest_url: str | None = None,
        cdn_url: str | None = None,
        jwks_url: str = DEFAULT_JWKS_URL,
        jwks_ttl_seconds: float = 86400.0,
        webhook_tolerance_seconds: float = 300.0,
        poll: PollPolicy | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__(poll=poll, request_timeout=request_timeout)
        import fal_client
        import fal_client.client as fal_module

        defaults = _sdk_defaults(fal_module)
        fal_module.QUEUE_URL_FORMAT = (base_url.rstrip("/") + "/") if base_url else defaults["QUEUE_URL_FORMAT"]
        fal_module.REST_URL = rest_url.rstrip("/") if rest_url else defaults["REST_URL"]
        fal_module.CDN_URL = cdn_url.rstrip("/") if cdn_url else defaults["CDN_URL"]
        self._sdk = fal_module
        self.model = model
        self.training_model = training_model
        self._client = fal_client.AsyncClient(key=key, default_timeout=request_timeout)
        self._verifier = FalWebhookVerifier(
            jwks_url, ttl_seconds=jwks_ttl_seconds, tolerance_seconds=webhook_tolerance_seconds,
            timeout=request_timeout,
        )

    @classmethod
    def from_settings(cls, settings: Any) -> FalProvider:
        return cls(
            key=settings.fal_key,
            model=settings.fal_model,
            training_model=settings.fal_training_model,
            base_url=settings.fal_base_url,
            rest_url=settings.fal_rest_url,
            cdn_url=settings.fal_cdn_url,
            jwks_url=settings.fal_webhook_jwks_url,
            jwks_ttl_seconds=settings.fal_webhook_jwks_ttl_seconds,
            webhook_tolerance_seconds=settings.provider_webhook_tolerance_seconds,
            poll=PollPolicy.from_settings(settings),
            request_timeout=settings.provider_request_timeout_seconds,
        )

    # -- errors -------------------------------------------------------------------------------

    def _error(self, exc: Exception, *, during: str, app: str | None = None, source: str | None = None) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, self._sdk.FalClientHTTPError):
            return http_status_error(
                self.name, exc.status_code, str(exc.message), during=during,
                credential_setting=self.credential_setting, model=app, model_source=source,
            )
        if isinstance(exc, httpx.HTTPStatusError):  # the SDK's CDN token request
            return http_status_error(
                self.name, exc.response.status_code, exc.response.text, during=during,
                credential_setting=self.credential_setting, model=app, model_source=source,
            )
        if isinstance(exc, (httpx.TransportError, httpx.TimeoutException, TimeoutError)):
            return transport_error(self.name, exc)
        if isinstance(exc, (KeyError, ValueError, TypeError, json.JSONDecodeError)):
            return bad_result(self.name, f"{exc.__class__.__name__}: {exc}")
        return ProviderError(f"{self.name}: {exc.__class__.__name__}: {exc}", code="provider_error")

    def _split(self, handle: str) -> tuple[str, str]:
        app, sep, request_id = handle.rpartition(":")
        return (app, request_id) if sep else (self.model, handle)

    # -- generation ---------------------------------------------------------------------------

    async def submit(self, request: GenerationRequest, *, webhook_url: str | None = None) -> Submission:
        """POST ``/{app}`` (``?fal_webhook=<url>``), protocols.md §1.1–1.2."""
        app = request.provider_model or self.model
        source = "the reference model's providerModels['fal'] in the catalog" if request.provider_model else "PIXELMINT_FAL_MODEL"
        arguments, notes = fal_arguments(request, app)
        return await self._submit(app, arguments, webhook_url=webhook_url, notes=notes, source=source)

    async def _submit(
        self, app: str, arguments: dict[str, Any], *, webhook_url: str | None, notes: list[str], source: str
    ) -> Submission:
        try:
            handle = await self._client.submit(app, arguments, webhook_url=webhook_url)
        except Exception as exc:
            raise self._error(exc, during="submit", app=app, source=source) from exc
        return Submission(
            provider=self.name,
            request_id=handle.request_id,
            handle=f"{app}:{handle.request_id}",
            status_url=handle.status_url,
            cancel_url=handle.cancel_url,
            notes=tuple(notes),
            raw={"request_id": handle.request_id, "status_url": handle.status_url, "response_url": handle.response_url},
        )

    async def status(self, handle: str) -> ProviderStatus:
        """GET ``…/requests/{id}/status?logs=true`` (§1.3)."""
        app, request_id = self._split(handle)
        try:
            status = await self._client.status(app, request_id, with_logs=True)
        except Exception as exc:
            raise self._error(exc, during="status", app=app) from exc
        sdk = self._sdk
        if isinstance(status, sdk.Queued):
            return ProviderStatus(ProviderState.QUEUED, queue_position=status.position, raw={"status": "IN_QUEUE"})
        logs = tuple(str(entry.get("message", "")) if isinstance(entry, Mapping) else str(entry) for entry in getattr(status, "logs", None) or [])
        if isinstance(status, sdk.InProgress):
            return ProviderStatus(ProviderState.RUNNING, progress=parse_progress(logs), logs=logs, raw={"status": "IN_PROGRESS"})
        if isinstance(status, sdk.Completed):
            metrics = dict(status.metrics or {})
            if status.error:
                return ProviderStatus(
                    ProviderState.FAILED, logs=logs, metrics=metrics, error=f"{status.error} ({status.error_type or 'error'})",
                    raw={"status": "COMPLETED", "error_type": status.error_type},
                )
            return ProviderStatus(ProviderState.SUCCEEDED, progress=100, logs=logs, metrics=metrics, raw={"status": "COMPLETED"})
        raise bad_result(self.name, f"unknown status {status!r}")

    async def cancel(self, handle: str) -> bool:
        """PUT ``…/requests/{id}/cancel`` (§1.5): True when accepted, False when already finished."""
        app, request_id = self._split(handle)
        try:
            await self._client.cancel(app, request_id)
            return True
        except self._sdk.FalClientHTTPError as exc:
            try:
                body_status = exc.response.json().get("status")
            except (ValueError, AttributeError):
                body_status = None
            if body_status in ("ALREADY_COMPLETED", "NOT_FOUND") or exc.status_code in (400, 404, 409):
                return False
            raise self._error(exc, during="cancel", app=app) from exc
        except Exception as exc:
            raise self._error(exc, during="cancel", app=app) from exc

    async def _fetch_output(self, handle: str) -> Any:
        """GET ``…/requests/{id}`` (§1.4; the SDK checks the status first)."""
        app, request_id = self._split(handle)
        try:
            return await self._client.result(app, request_id)
        except Exception as exc:
            raise self._error(exc, during="result", app=app) from exc

    def _image_refs(self, output: Any, request: GenerationRequest | None) -> list[tuple[str, int]]:
        if not isinstance(output, Mapping) or not isinstance(output.get("images"), list):
            raise bad_result(self.name, "no 'images' list in the output")
        seed = output.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            seed = request.seed if request is not None else 0
        refs = []
        for image in output["images"]:
            if not isinstance(image, Mapping) or not isinstance(image.get("url"), str):
                raise bad_result(self.name, f"image entry {str(image)[:100]!r} has no url")
            refs.append((image["url"], seed))
        return refs

    # -- webhooks -----------------------------------------------------------------------------

    async def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Ed25519 check (webhooks.py, §1.7), then the payload (§1.6): ``status`` OK →
        SUCCEEDED with ``output`` = ``payload``; ERROR → FAILED with ``error``."""
        timestamp = await self._verifier.verify(headers, body)
        try:
            data = json.loads(body)
            request_id, status = data["request_id"], data["status"]
        except (ValueError, KeyError, TypeError):
            raise WebhookVerificationError("fal webhook body is not the documented JSON", reason="bad_payload") from None
        if status == "OK":
            state, error = ProviderState.SUCCEEDED, None
        elif status == "ERROR":
            state, error = ProviderState.FAILED, str(data.get("error") or data.get("payload") or "error")[:2000]
        else:
            raise WebhookVerificationError(f"unknown fal webhook status {status!r}", reason="bad_payload")
        if state is ProviderState.SUCCEEDED and data.get("payload") is None and data.get("payload_error"):
            error = str(data["payload_error"])  # output too big for JSON: fetch it with result()
        return WebhookEvent(
            provider=self.name,
            request_id=str(request_id),
            delivery_id=f"{request_id}:{status}",
            state=state,
            output=data.get("payload") if state is ProviderState.SUCCEEDED else None,
            error=error,
            timestamp=dt.datetime.fromtimestamp(timestamp, dt.UTC),
            payload=data,
        )

    # -- training -----------------------------------------------------------------------------

    async def submit_training(self, request: TrainingRequest, *, webhook_url: str | None = None) -> Submission:
        """Zip + upload the images (``AsyncClient.upload``), submit flux-lora-fast-training (§1.8)
        with ``images_data_url``, ``trigger_word``, ``steps``, ``is_style`` and ``create_masks``
        (on for subjects, off for styles)."""
        archive = training_archive(request.images)
        try:
            url = await self._client.upload(archive, "application/zip", file_name=f"{_slug(request.model_key)}.zip")
        except Exception as exc:
            raise self._error(exc, during="upload") from exc
        arguments: dict[str, Any] = {
            "images_data_url": url,
            "trigger_word": request.trigger_word,
            "steps": request.steps,
            "is_style": request.is_style,
            "create_masks": not request.is_style,
        }
        arguments.update(request.options)
        return await self._submit(
            self.training_model, arguments, webhook_url=webhook_url, notes=[], source="PIXELMINT_FAL_TRAINING_MODEL"
        )

    async def training_result(self, handle: str, *, output: Any = None) -> TrainingArtifact:
        """``diffusers_lora_file.url`` (the LoRA, applied at generation with ``loras``) and
        ``config_file.url`` of the trainer output (§1.8)."""
        if output is None:
            output = await self._fetch_output(handle)
        try:
            weights = output["diffusers_lora_file"]["url"]
            if not isinstance(weights, str):
                raise TypeError("diffusers_lora_file.url is not a string")
        except (KeyError, TypeError) as exc:
            raise bad_result(self.name, f"no diffusers_lora_file.url in the training output ({exc})") from exc
        config = output.get("config_file") or {}
        return TrainingArtifact(
            provider=self.name,
            weights_url=weights,
            config_url=config.get("url") if isinstance(config, Mapping) else None,
            provider_model=None,  # generate with the reference model's fal model
            lora_path=weights,
            trigger_word=None,
            raw=dict(output),
        )

    async def aclose(self) -> None:
        await super().aclose()
        await self._verifier.aclose()
        # The SDK keeps its httpx client in a cached property and offers no close(): close it if made.
        if "_client" in vars(self._client):
            sdk_http = await self._client._client
            if isinstance(sdk_http, httpx.AsyncClient):
                await sdk_http.aclose()


_DEFAULTS: dict[str, str] = {}


def _sdk_defaults(module: Any) -> dict[str, str]:
    """The SDK's own hosts, remembered before the first override."""
    if not _DEFAULTS:
        _DEFAULTS.update(QUEUE_URL_FORMAT=module.QUEUE_URL_FORMAT, REST_URL=module.REST_URL, CDN_URL=module.CDN_URL)
    return _DEFAULTS
