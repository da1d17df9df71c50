"""``diffusers``: a local ``diffusers`` pipeline, loaded from a folder on disk only
(imagegen.md §5). Optional extra: install a torch build for the machine first (CPU here:
``pip install torch==2.13.0``), then ``pip install 'pixelmint[diffusers]'``.

The pipeline folder is the diffusers layout (``model_index.json`` + one folder per component, as
``save_pretrained`` writes). ``PIXELMINT_DIFFUSERS_MODEL_DIR`` is the default pipeline; a
request's ``provider_model`` picks another: an absolute path, or a folder name inside
``PIXELMINT_DIFFUSERS_MODEL_DIR``. Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` is set and
``local_files_only=True`` passed. Loaded pipelines are cached per folder; one generation runs at a
time per pipeline (in a worker thread).

Our parameters → pipeline call: ``prompt``, ``negative_prompt``, ``width``/``height`` (rounded
down to a multiple of 8, noted in the trace), ``num_images_per_prompt``, one
``torch.Generator`` per image seeded with ``seed + i`` (so image ``i`` reproduces alone with its own
seed, the A1111 convention ``GenerationRequest.image_seed`` documents), ``num_inference_steps``
``PIXELMINT_DIFFUSERS_STEPS`` (standard) or 1.6× that (hd), ``guidance_scale``
``PIXELMINT_DIFFUSERS_GUIDANCE_SCALE``; LoRAs → ``load_lora_weights`` + ``set_adapters`` with their
scales (local ``.safetensors`` files only), unloaded afterwards. ``GenerationRequest.options`` is
passed to the pipeline call as is.

Progress comes from ``callback_on_step_end`` (step/total). Cancelling the caller (or the
generation timeout) sets the pipeline's ``_interrupt`` flag at the next step and the partial
images are discarded. Outputs are PNGs with ``parameters`` (A1111 style) and ``pixelmint`` (JSON)
text chunks, as the procedural provider writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from pixelmint.providers.base import (
    GeneratedImage,
    GenerationRequest,
    ProgressCallback,
    ProviderError,
    ProviderState,
    ProviderStatus,
    ProviderTrace,
)

HD_STEP_FACTOR = 1.6


class _Interrupted(Exception):
    """The pipeline stopped early on request; its partial images are discarded."""


async def _awaited(awaitable: Awaitable[None]) -> None:
    """``awaitable`` as a coroutine, which ``run_coroutine_threadsafe`` requires."""
    await awaitable


class DiffusersProvider:
    """A local diffusers text-to-image pipeline (module docstring)."""

    name = "diffusers"
    model_setting = "PIXELMINT_DIFFUSERS_MODEL_DIR"

    def __init__(
        self,
        *,
        model_dir: Path | str,
        device: str = "cpu",
        steps: int = 25,
        guidance_scale: float = 7.0,
        timeout: float = 600.0,
    ) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import diffusers  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the installed extra
            raise RuntimeError(
                f"{self.model_setting} is set but the diffusers extra is missing: install torch, then "
                "pip install 'pixelmint[diffusers]'"
            ) from exc
        self.model_dir = Path(model_dir)
        self.device = device
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.timeout = timeout
        self._pipelines: dict[Path, Any] = {}
        self._locks: dict[Path, asyncio.Lock] = {}
        self._load_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> DiffusersProvider:
        return cls(
            model_dir=settings.diffusers_model_dir,
            device=settings.diffusers_device,
            steps=settings.diffusers_steps,
            guidance_scale=settings.diffusers_guidance_scale,
            timeout=settings.provider_generation_timeout_seconds,
        )

    def pipeline_dir(self, provider_model: str | None) -> Path:
        """The folder for ``provider_model`` (module docstring); raises
        ``provider_model_not_found`` when it holds no ``model_index.json``."""
        path = self.model_dir
        if provider_model:
            candidate = Path(provider_model)
            path = candidate if candidate.is_absolute() else self.model_dir / candidate
        if not (path / "model_index.json").is_file():
            source = "the reference model's providerModels['diffusers']" if provider_model else self.model_setting
            raise ProviderError(
                f"no diffusers pipeline (model_index.json) in {path}; fix {source}", code="provider_model_not_found"
            )
        return path

    def _load(self, path: Path) -> Any:
        with self._load_lock:
            pipe = self._pipelines.get(path)
            if pipe is None:
                from diffusers import DiffusionPipeline

                pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
                pipe.to(self.device)
                pipe.set_progress_bar_config(disable=True)
                self._pipelines[path] = pipe
            return pipe

    async def generate(
        self,
        request: GenerationRequest,
        *,
        progress: ProgressCallback | None = None,
        trace: ProviderTrace | None = None,
    ) -> list[GeneratedImage]:
        """Render ``request`` (module docstring). Raises ``ProviderError``: unknown folder →
        ``provider_model_not_found``; a LoRA that is not a local file → ``provider_unsupported``;
        out of memory → retryable ``provider_unavailable``; timeout → retryable ``provider_timeout``."""
        trace = trace if trace is not None else ProviderTrace()
        path = self.pipeline_dir(request.provider_model)
        for lora in request.loras:
            if not Path(lora.path).is_file():  # noqa: ASYNC240 -- one stat() per LoRA, before the threaded load
                raise ProviderError(
                    f"diffusers loads LoRA weights from local files only, not {lora.path!r}", code="provider_unsupported"
                )
        width, height = request.width - request.width % 8, request.height - request.height % 8
        if (width, height) != (request.width, request.height):
            trace.notes.append(f"resolution {request.width}x{request.height} rounded down to {width}x{height}")
        trace.provider, trace.submitted_at = self.name, dt.datetime.now(dt.UTC)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        steps = round(self.steps * (HD_STEP_FACTOR if request.quality == "hd" else 1.0))

        def report(step: int) -> None:
            if progress is not None:
                asyncio.run_coroutine_threadsafe(_awaited(progress(min(99, int(100 * step / steps)))), loop)

        def run() -> list[Any]:
            pipe = self._load(path)
            return self._render(pipe, request, width, height, steps, stop, report)

        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            trace.started_at = dt.datetime.now(dt.UTC)
            task = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                pil_images = await asyncio.wait_for(asyncio.shield(task), self.timeout)
            except (asyncio.CancelledError, TimeoutError) as exc:
                stop.set()
                try:
                    await task  # let the thread stop at the next step before releasing the pipeline
                except Exception:
                    pass
                if isinstance(exc, TimeoutError):
                    raise ProviderError(
                        f"diffusers did not finish within {self.timeout:.0f} s (PIXELMINT_PROVIDER_GENERATION_TIMEOUT_SECONDS)",
                        code="provider_timeout", retryable=True,
                    ) from None
                raise
            except ProviderError:
                raise
            except RuntimeError as exc:
                oom = "out of memory" in str(exc).lower()
                raise ProviderError(
                    f"diffusers failed: {exc}", code="provider_unavailable" if oom else "provider_error", retryable=oom
                ) from exc
        await trace.observe(ProviderStatus(ProviderState.SUCCEEDED, progress=100, metrics={"steps": steps}))
        images = [self._png(image, request, index, steps) for index, image in enumerate(pil_images)]
        if len(images) != request.num_images:
            raise ProviderError(f"diffusers returned {len(images)} images", code="provider_bad_result")
        if progress is not None:
            await progress(100)
        return images

    def _render(self, pipe: Any, request: GenerationRequest, width: int, height: int, steps: int,
                stop: threading.Event, report: Any) -> list[Any]:
        import torch

        adapters = []
        try:
            for index, lora in enumerate(request.loras):
                name = f"pixelmint_{index}"
                file = Path(lora.path)
                pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=name)
                adapters.append(name)
            if adapters:
                pipe.set_adapters(adapters, adapter_weights=[lora.scale for lora in request.loras])

            def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
                report(step + 1)
                if stop.is_set():
                    pipeline._interrupt = True
                return callback_kwargs

            generators = [torch.Generator("cpu").manual_seed(request.image_seed(i)) for i in range(request.num_images)]
            result = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=self.guidance_scale,
                num_images_per_prompt=request.num_images,
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="pil",
                **dict(request.options),
            )
            if stop.is_set():
                raise _Interrupted()
            return list(result.images)
        finally:
            if adapters:
                pipe.delete_adapters(adapters)

    def _png(self, image: Any, request: GenerationRequest, index: int, steps: int) -> GeneratedImage:
        from PIL.PngImagePlugin import PngInfo

        seed = request.image_seed(index)
        parameters = request.prompt
        if request.negative_prompt:
            parameters += f"\nNegative prompt: {request.negative_prompt}"
        parameters += (
            f"\nSteps: {steps}, CFG scale: {self.guidance_scale}, Seed: {seed}, Size: {image.width}x{image.height}, "
            f"Model: {request.model_key}, Provider: diffusers"
        )
        recipe = {
            "prompt": request.prompt, "negativePrompt": request.negative_prompt, "seed": seed, "width": image.width,
            "height": image.height, "quality": request.quality, "model": request.model_key, "provider": self.name,
            "steps": steps, "guidanceScale": self.guidance_scale,
            "loras": [{"path": Path(lora.path).name, "scale": lora.scale} for lora in request.loras],
        }
        info = PngInfo()
        info.add_text("parameters", parameters)
        info.add_text("pixelmint", json.dumps(recipe, sort_keys=True))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG", pnginfo=info)
        return GeneratedImage(buffer.getvalue(), "image/png", image.width, image.height, seed)

    async def aclose(self) -> None:
        self._pipelines.clear()
