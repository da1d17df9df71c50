"""fal through the official fal-client SDK against a local fal queue (tests/providers/fake_fal.py)."""

from __future__ import annotations

import asyncio
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
from pixelmint.providers.remote import PollPolicy
from tests.providers.conftest import fal_provider
from tests.providers.fake_fal import FakeFal, zip_names
from tests.providers.localserver import png

REQUEST = GenerationRequest(
    prompt="a red bicycle at dawn", negative_prompt="blurry", width=768, height=512, num_images=2, seed=1234,
    quality="hd", model_key="fashion-editorial", loras=(LoraWeight("https://example.test/lora.safetensors", 0.8),),
)


def with_prompt(prompt: str, **changes) -> GenerationRequest:
    return dataclasses.replace(REQUEST, prompt=prompt, **changes)


async def test_generate_end_to_end(fal, fake_fal: FakeFal) -> None:
    seen: list[int] = []

    async def progress(value: int) -> None:
        seen.append(value)

    trace = ProviderTrace()
    images = await fal.generate(REQUEST, progress=progress, trace=trace)

    assert [(i.width, i.height, i.content_type, i.seed) for i in images] == [(768, 512, "image/png", 1234)] * 2
    assert all(i.data.startswith(b"\x89PNG") for i in images)
    sent = fake_fal.requests[trace.request_id].input
    assert sent["image_size"] == {"width": 768, "height": 512}
    assert sent["num_images"] == 2 and sent["seed"] == 1234 and sent["output_format"] == "png"
    assert sent["num_inference_steps"] == 40  # hd
    assert sent["loras"] == [{"path": "https://example.test/lora.safetensors", "scale": 0.8}]
    assert "negative_prompt" not in sent  # FLUX takes none …
    assert any("negativePrompt ignored" in note for note in trace.notes)  # … and the job says so
    assert seen == [50, 100]
    record = trace.as_dict()
    assert record["handle"] == f"fal-ai/flux-lora:{trace.request_id}" and record["polls"] == 3
    assert record["metrics"] == {"inference_time": 0.25}
    assert any("14/28" in line for line in trace.logs)
    assert record["startedAt"] and record["completedAt"] and record["runSeconds"] is not None


async def test_subpath_model_and_negative_prompt_for_non_flux(fal, fake_fal: FakeFal) -> None:
    trace = ProviderTrace()
    images = await fal.generate(with_prompt("studio", provider_model="fal-ai/flux/dev", loras=()), trace=trace)
    assert len(images) == 2
    assert fake_fal.requests[trace.request_id].path == "fal-ai/flux/dev"  # status and result used fal-ai/flux
    trace = ProviderTrace()
    await fal.generate(with_prompt("studio", provider_model="fal-ai/fast-sdxl", quality="standard"), trace=trace)
    sent = fake_fal.requests[trace.request_id].input
    assert sent["negative_prompt"] == "blurry" and sent["num_inference_steps"] == 28


async def test_invalid_key_is_not_retryable_and_names_the_setting(closing, fake_fal: FakeFal) -> None:
    provider = closing(fal_provider(fake_fal, key="revoked"))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.code == "provider_auth_failed" and not caught.value.retryable
    assert "PIXELMINT_FAL_KEY" in str(caught.value)


async def test_unknown_model_names_where_to_fix_it(fal) -> None:
    with pytest.raises(ProviderError) as caught:
        await fal.generate(with_prompt("x", provider_model="fal-ai/no-such-model"))
    assert caught.value.code == "provider_model_not_found" and not caught.value.retryable
    assert "providerModels['fal']" in str(caught.value) and "fal-ai/no-such-model" in str(caught.value)


async def test_server_error_is_retryable(fal) -> None:
    with pytest.raises(ProviderError) as caught:
        await fal.generate(with_prompt("[500] boom"))
    assert caught.value.code == "provider_unavailable" and caught.value.retryable


@pytest.mark.parametrize("prompt", ["[malformed]", "[badjson]", "[notimage]"])
async def test_malformed_results(fal, prompt: str) -> None:
    with pytest.raises(ProviderError) as caught:
        await fal.generate(with_prompt(prompt))
    assert caught.value.code == "provider_bad_result" and not caught.value.retryable


async def test_failed_request(fal) -> None:
    with pytest.raises(ProviderError) as caught:
        await fal.generate(with_prompt("[fail]"))
    assert caught.value.code == "provider_job_failed" and not caught.value.retryable
    assert "422" in str(caught.value)


async def test_cancel(fal, fake_fal: FakeFal) -> None:
    submission = await fal.submit(with_prompt("[slow]"))
    assert (await fal.status(submission.handle)).state is ProviderState.QUEUED
    assert await fal.cancel(submission.handle) is True
    assert submission.request_id in fake_fal.cancels
    finished = await fal.submit(with_prompt("quick"))
    await fal.wait(finished.handle)
    assert await fal.cancel(finished.handle) is False  # ALREADY_COMPLETED


async def test_timeout_cancels_and_is_retryable(closing, fake_fal: FakeFal) -> None:
    provider = closing(fal_provider(fake_fal, poll=PollPolicy(interval=0.01, max_interval=0.02, generation_timeout=0.2)))
    trace = ProviderTrace()
    with pytest.raises(ProviderError) as caught:
        await provider.generate(with_prompt("[slow] forever"), trace=trace)
    assert caught.value.code == "provider_timeout" and caught.value.retryable
    assert trace.request_id in fake_fal.cancels


async def test_cancelled_caller_cancels_at_the_provider(fal, fake_fal: FakeFal) -> None:
    submitted = asyncio.Event()
    trace = ProviderTrace(on_submit=lambda s: _set(submitted))
    task = asyncio.create_task(fal.generate(with_prompt("[slow] cancel me"), trace=trace))
    await asyncio.wait_for(submitted.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trace.request_id in fake_fal.cancels


async def _set(event: asyncio.Event) -> None:
    event.set()


async def test_resume_after_restart_with_a_new_provider(closing, fal, fake_fal: FakeFal) -> None:
    submission = await fal.submit(REQUEST)
    other = closing(fal_provider(fake_fal))
    images = await other.wait(submission.handle, request=REQUEST)
    assert len(images) == 2
    bare = await other.wait(submission.request_id, request=REQUEST)  # a bare id means PIXELMINT_FAL_MODEL
    assert [i.data for i in bare] == [i.data for i in images]


async def test_webhook_round_trip(fal, fake_fal: FakeFal) -> None:
    before = len(fake_fal.deliveries)
    submission = await fal.submit(REQUEST, webhook_url=f"{fake_fal.base}/_sink")
    assert fake_fal.requests[submission.request_id].webhook == f"{fake_fal.base}/_sink"
    headers, body = fake_fal.wait_for_delivery(before + 1)[before]
    event = await fal.verify_webhook(headers, body)
    assert event.request_id == submission.request_id and event.state is ProviderState.SUCCEEDED
    assert event.delivery_id == f"{submission.request_id}:OK"
    images = await fal.result(submission.handle, output=event.output, request=REQUEST)
    assert [(i.width, i.height) for i in images] == [(768, 512)] * 2


async def test_failed_webhook(fal, fake_fal: FakeFal) -> None:
    before = len(fake_fal.deliveries)
    submission = await fal.submit(with_prompt("[fail]"), webhook_url=f"{fake_fal.base}/_sink")
    headers, body = fake_fal.wait_for_delivery(before + 1)[before]
    event = await fal.verify_webhook(headers, body)
    assert event.request_id == submission.request_id
    assert event.state is ProviderState.FAILED and "422" in (event.error or "") and event.output is None


TRAINING = TrainingRequest(
    images=(
        TrainingImage("face 1.png", png(64, 64, 1), caption="a photo of TOK"),
        TrainingImage("../etc/face2.jpg", png(64, 64, 2)),
        TrainingImage("face 1.png", png(64, 64, 3)),
    ),
    trigger_word="TOK",
    steps=500,
    model_key="custom:42:v1",
    provider_model="fal-ai/flux-lora",
)


async def test_training_uploads_the_zip_and_returns_the_lora(fal, fake_fal: FakeFal) -> None:
    submission = await fal.submit_training(TRAINING)
    sent = fake_fal.requests[submission.request_id]
    assert sent.app == "fal-ai/flux-lora-fast-training"
    assert sent.input["trigger_word"] == "TOK" and sent.input["steps"] == 500
    assert sent.input["create_masks"] is True and sent.input["is_style"] is False
    name = sent.input["images_data_url"].split("/files/uploads/", 1)[1]
    files = zip_names(fake_fal.uploads[name])
    assert files == {
        "face_1.png": TRAINING.images[0].data,
        "face_1.txt": b"a photo of TOK",
        "face2.jpg": TRAINING.images[1].data,
        "face_1_2.png": TRAINING.images[2].data,
    }
    assert fake_fal.upload_headers[name]["content-type"] == "application/zip"
    artifact = await fal.training_result(submission.handle)
    assert artifact.lora_path == artifact.weights_url and artifact.weights_url.endswith("/lora.safetensors")
    assert artifact.config_url.endswith("/config.json") and artifact.provider_model is None


async def test_train_polls_to_the_artifact(fal) -> None:
    trace = ProviderTrace()
    artifact = await fal.train(TRAINING, trace=trace)
    assert artifact.as_dict()["loraPath"].endswith("/lora.safetensors")
    assert trace.handle.startswith("fal-ai/flux-lora-fast-training:")
