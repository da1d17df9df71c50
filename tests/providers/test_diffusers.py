"""The local diffusers provider on a tiny random pipeline built on the CPU (tests/providers/
tiny_diffusers.py). Needs the "diffusers" extra: ./scripts/test (and so CI) installs it and sets
PIXELMINT_TEST_REQUIRE_DIFFUSERS=1, where a missing extra fails; elsewhere these tests are skipped."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from pixelmint.providers.base import GenerationRequest, LoraWeight, ProviderError, ProviderTrace
from tests.providers.tiny_diffusers import build_lora, build_pipeline

pytestmark = pytest.mark.diffusers

REQUEST = GenerationRequest(prompt="a red bicycle", negative_prompt="blurry", width=64, height=48, num_images=2,
                            seed=11, quality="standard", model_key="custom:1:v1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # Imported here, not at collection: torch and diffusers take seconds to import, and every
    # xdist worker collects every module.
    if os.environ.get("PIXELMINT_TEST_REQUIRE_DIFFUSERS") == "1":
        import diffusers  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
    else:
        pytest.importorskip("torch")
        pytest.importorskip("diffusers")
        pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("diffusers")
    pipeline = build_pipeline(root)
    return pipeline, build_lora(pipeline, root / "lora")


@pytest.fixture(scope="session")
def provider(tiny: tuple[Path, Path]):
    from pixelmint.providers.diffusers_local import DiffusersProvider

    return DiffusersProvider(model_dir=tiny[0], steps=3, guidance_scale=5.0)


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).tobytes()


async def test_generate_pngs_with_seeds_progress_and_recipe(provider) -> None:
    seen: list[int] = []

    async def progress(value: int) -> None:
        seen.append(value)

    trace = ProviderTrace()
    images = await provider.generate(REQUEST, progress=progress, trace=trace)
    assert [(i.width, i.height, i.content_type, i.seed) for i in images] == [(64, 48, "image/png", 11), (64, 48, "image/png", 12)]
    recipe = json.loads(Image.open(io.BytesIO(images[1].data)).text["pixelmint"])
    assert recipe["seed"] == 12 and recipe["provider"] == "diffusers" and recipe["steps"] == 3
    assert seen[-1] == 100 and trace.metrics["steps"] == 3
    again = await provider.generate(REQUEST)
    assert [pixels(i.data) for i in again] == [pixels(i.data) for i in images]  # deterministic
    other = await provider.generate(dataclasses.replace(REQUEST, seed=99))
    assert pixels(other[0].data) != pixels(images[0].data)


async def test_lora_scale_changes_the_image(provider, tiny) -> None:
    base = await provider.generate(dataclasses.replace(REQUEST, num_images=1))
    off = await provider.generate(dataclasses.replace(REQUEST, num_images=1, loras=(LoraWeight(str(tiny[1]), 0.0),)))
    on = await provider.generate(dataclasses.replace(REQUEST, num_images=1, loras=(LoraWeight(str(tiny[1]), 1.0),)))
    assert pixels(off[0].data) == pixels(base[0].data)
    assert pixels(on[0].data) != pixels(base[0].data)
    after = await provider.generate(dataclasses.replace(REQUEST, num_images=1))  # adapters were removed
    assert pixels(after[0].data) == pixels(base[0].data)


async def test_errors(provider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(dataclasses.replace(REQUEST, provider_model="no-such-folder"))
    assert caught.value.code == "provider_model_not_found" and "providerModels['diffusers']" in str(caught.value)
    with pytest.raises(ProviderError) as caught:
        await provider.generate(dataclasses.replace(REQUEST, loras=(LoraWeight("https://example.test/x.safetensors"),)))
    assert caught.value.code == "provider_unsupported"


async def test_cancel_interrupts_and_releases_the_pipeline(tiny) -> None:
    from pixelmint.providers.diffusers_local import DiffusersProvider

    slow = DiffusersProvider(model_dir=tiny[0], steps=400)
    started = asyncio.Event()

    async def progress(value: int) -> None:
        started.set()

    task = asyncio.create_task(slow.generate(dataclasses.replace(REQUEST, num_images=1), progress=progress))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fast = DiffusersProvider(model_dir=tiny[0], steps=2)
    fast._pipelines = slow._pipelines
    assert len(await fast.generate(dataclasses.replace(REQUEST, num_images=1))) == 1


async def test_registry_registers_diffusers(tiny, tmp_path) -> None:
    from pixelmint.providers.registry import Providers
    from pixelmint.settings import Settings

    providers = Providers.from_settings(Settings(data_dir=tmp_path, diffusers_model_dir=tiny[0]))
    assert "diffusers" in providers.names() and providers.remote("diffusers") is None
    await providers.aclose()
