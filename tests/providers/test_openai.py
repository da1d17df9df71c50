"""The OpenAI-compatible provider through the official openai SDK against a local
``/v1/images/generations`` (tests/providers/fake_openai.py)."""

from __future__ import annotations

import dataclasses

import pytest

from pixelmint.providers.base import (
    GenerationRequest,
    LoraWeight,
    ProviderError,
    ProviderState,
    ProviderTrace,
    TrainingImage,
    TrainingRequest,
)
from tests.providers.conftest import openai_provider
from tests.providers.fake_openai import FakeOpenAI

REQUEST = GenerationRequest(
    prompt="a red bicycle at dawn", negative_prompt="blurry", width=768, height=512, num_images=2, seed=5,
    quality="hd", model_key="fashion-editorial",
)


def with_prompt(prompt: str, **changes) -> GenerationRequest:
    return dataclasses.replace(REQUEST, prompt=prompt, **changes)


async def test_gpt_image_1_b64(openai_images, fake_openai: FakeOpenAI) -> None:
    seen: list[int] = []

    async def progress(value: int) -> None:
        seen.append(value)

    trace = ProviderTrace()
    images = await openai_images.generate(REQUEST, progress=progress, trace=trace)
    assert [(i.width, i.height, i.content_type) for i in images] == [(1536, 1024, "image/png")] * 2
    assert fake_openai.calls[-1] == {
        "model": "gpt-image-1", "prompt": "a red bicycle at dawn\n\nAvoid: blurry", "n": 2, "quality": "high",
        "size": "1536x1024",
    }
    assert seen == [100]
    assert trace.request_id == "req_fake123" and trace.metrics["usage"]["total_tokens"] == 110
    assert any("seed not supported" in note for note in trace.notes)
    assert any("sent as 1536x1024" in note for note in trace.notes)
    assert (await openai_images.status(trace.handle)).state is ProviderState.SUCCEEDED
    assert [i.data for i in await openai_images.result(trace.handle)] == [i.data for i in images]
    assert await openai_images.cancel(trace.handle) is False


async def test_exact_size_for_other_models_and_url_outputs(openai_images, fake_openai: FakeOpenAI) -> None:
    images = await openai_images.generate(with_prompt("exact", provider_model="gpt-image-2", num_images=1))
    assert (images[0].width, images[0].height) == (768, 512) and fake_openai.calls[-1]["size"] == "768x512"
    images = await openai_images.generate(
        with_prompt("dalle", provider_model="dall-e-3", num_images=1, options={"response_format": "url"})
    )
    assert fake_openai.calls[-1]["quality"] == "hd" and fake_openai.calls[-1]["size"] == "1792x1024"
    assert (images[0].width, images[0].height) == (1792, 1024)  # downloaded from the returned url
    await openai_images.generate(with_prompt("dalle2", provider_model="dall-e-2", num_images=1))
    assert fake_openai.calls[-1]["size"] == "1024x1024" and fake_openai.calls[-1]["response_format"] == "b64_json"
    assert "quality" not in fake_openai.calls[-1]


async def test_invalid_key(closing, fake_openai: FakeOpenAI) -> None:
    provider = closing(openai_provider(fake_openai, key="sk-revoked"))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.code == "provider_auth_failed" and not caught.value.retryable
    assert "PIXELMINT_OPENAI_API_KEY" in str(caught.value)


async def test_unknown_model(closing, fake_openai: FakeOpenAI) -> None:
    provider = closing(openai_provider(fake_openai, model="gpt-nope"))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.code == "provider_model_not_found" and "PIXELMINT_OPENAI_MODEL" in str(caught.value)


@pytest.mark.parametrize("prompt, code, retryable", [
    ("[500]", "provider_unavailable", True),
    ("[quota]", "provider_quota_exhausted", False),
    ("[badjson]", "provider_bad_result", False),
    ("[empty]", "provider_bad_result", False),
    ("[notimage]", "provider_bad_result", False),
])
async def test_failures(openai_images, prompt: str, code: str, retryable: bool) -> None:
    with pytest.raises(ProviderError) as caught:
        await openai_images.generate(with_prompt(prompt))
    assert caught.value.code == code and caught.value.retryable is retryable


async def test_sdk_retries_server_errors_when_allowed(closing, fake_openai: FakeOpenAI) -> None:
    provider = closing(openai_provider(fake_openai, max_retries=1))
    calls = len(fake_openai.calls)
    with pytest.raises(ProviderError) as caught:
        await provider.generate(with_prompt("[500] again"))
    assert caught.value.retryable and len(fake_openai.calls) == calls + 2


async def test_unsupported(openai_images) -> None:
    with pytest.raises(ProviderError) as caught:
        await openai_images.generate(with_prompt("lora", loras=(LoraWeight("x"),)))
    assert caught.value.code == "provider_unsupported"
    training = TrainingRequest(images=(TrainingImage("a.png", b"x"),), trigger_word="TOK", steps=10, model_key="m")
    with pytest.raises(ProviderError) as caught:
        await openai_images.train(training)
    assert caught.value.code == "provider_unsupported"
    with pytest.raises(ProviderError) as caught:
        await openai_images.status("openai:unknown")
    assert caught.value.code == "provider_request_not_found"
