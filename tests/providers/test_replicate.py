"""Replicate through the official replicate SDK against a local Replicate API
(tests/providers/fake_replicate.py)."""

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
from tests.providers.conftest import replicate_provider
from tests.providers.fake_fal import zip_names
from tests.providers.fake_replicate import VERSION, FakeReplicate
from tests.providers.localserver import png

REQUEST = GenerationRequest(
    prompt="a red bicycle at dawn", negative_prompt="blurry", width=768, height=512, num_images=2, seed=99,
    quality="standard", model_key="fashion-editorial", loras=(LoraWeight("https://example.test/l.safetensors", 0.7),),
)


def with_prompt(prompt: str, **changes) -> GenerationRequest:
    return dataclasses.replace(REQUEST, prompt=prompt, **changes)


async def test_generate_with_prefer_wait_needs_no_poll(replicate, fake_replicate: FakeReplicate) -> None:
    trace = ProviderTrace()
    images = await replicate.generate(REQUEST, trace=trace)
    assert [(i.width, i.height, i.content_type, i.seed) for i in images] == [(1024, 1024, "image/png", 99)] * 2
    job = fake_replicate.jobs[trace.request_id]
    assert job.headers["prefer"] == "wait=60"
    assert job.polls == 0 and trace.polls == 1  # the create reply was already final
    assert job.input == {
        "prompt": "a red bicycle at dawn", "num_outputs": 2, "seed": 99, "num_inference_steps": 28,
        "output_format": "png", "aspect_ratio": "3:2", "megapixels": "1",
        "lora_weights": "https://example.test/l.safetensors", "lora_scale": 0.7,
    }
    assert trace.handle == f"predictions/{trace.request_id}" and trace.web_url.endswith(trace.request_id)
    assert any("aspect_ratio 3:2" in note for note in trace.notes)
    assert any("negativePrompt ignored" in note for note in trace.notes)
    assert trace.metrics["predict_time"] == 1.5


async def test_generate_by_polling(closing, fake_replicate: FakeReplicate) -> None:
    provider = closing(replicate_provider(fake_replicate, wait_seconds=0))
    seen: list[int] = []

    async def progress(value: int) -> None:
        seen.append(value)

    trace = ProviderTrace()
    images = await provider.generate(with_prompt("small", width=512, height=512, quality="hd"), progress=progress, trace=trace)
    job = fake_replicate.jobs[trace.request_id]
    assert "prefer" not in job.headers and job.polls == 2
    assert job.input["megapixels"] == "0.25" and job.input["aspect_ratio"] == "1:1" and job.input["num_inference_steps"] == 40
    assert [(i.width, i.height) for i in images] == [(512, 512)] * 2
    assert seen == [50, 100]
    assert any("Using seed: 7" in line for line in trace.logs)


async def test_generate_with_a_version(replicate, fake_replicate: FakeReplicate) -> None:
    trace = ProviderTrace()
    images = await replicate.generate(with_prompt("trained", provider_model=f"acme/trained:{VERSION}", loras=()), trace=trace)
    assert len(images) == 2 and fake_replicate.jobs[trace.request_id].version == VERSION


async def test_non_flux_model_gets_width_height_and_negative_prompt(replicate, fake_replicate: FakeReplicate) -> None:
    trace = ProviderTrace()
    await replicate.generate(with_prompt("sdxl", provider_model="stability-ai/sdxl", loras=()), trace=trace)
    sent = fake_replicate.jobs[trace.request_id].input
    assert sent["width"] == 768 and sent["height"] == 512 and sent["negative_prompt"] == "blurry"


async def test_unknown_version_names_where_to_fix_it(replicate) -> None:
    with pytest.raises(ProviderError) as caught:
        await replicate.generate(with_prompt("x", provider_model="acme/trained:" + "f" * 64))
    assert caught.value.code == "provider_model_not_found" and not caught.value.retryable
    assert "providerModels['replicate']" in str(caught.value)


async def test_unknown_model(closing, fake_replicate: FakeReplicate) -> None:
    provider = closing(replicate_provider(fake_replicate, model="nobody/nothing"))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.code == "provider_model_not_found" and "PIXELMINT_REPLICATE_MODEL" in str(caught.value)


async def test_invalid_token(closing, fake_replicate: FakeReplicate) -> None:
    provider = closing(replicate_provider(fake_replicate, token="r8-revoked"))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.code == "provider_auth_failed" and not caught.value.retryable
    assert "PIXELMINT_REPLICATE_API_TOKEN" in str(caught.value)


async def test_server_error_is_retryable(replicate) -> None:
    with pytest.raises(ProviderError) as caught:
        await replicate.generate(with_prompt("[500]"))
    assert caught.value.code == "provider_unavailable" and caught.value.retryable


@pytest.mark.parametrize("prompt, code", [("[fail]", "provider_job_failed"), ("[malformed]", "provider_bad_result"),
                                          ("[badjson]", "provider_bad_result")])
async def test_failures(closing, fake_replicate: FakeReplicate, prompt: str, code: str) -> None:
    provider = closing(replicate_provider(fake_replicate, wait_seconds=0))
    with pytest.raises(ProviderError) as caught:
        await provider.generate(with_prompt(prompt))
    assert caught.value.code == code and not caught.value.retryable


async def test_cancel(replicate, fake_replicate: FakeReplicate) -> None:
    submission = await replicate.submit(with_prompt("[slow]"))
    assert submission.state is ProviderState.QUEUED and "prefer" not in fake_replicate.jobs[submission.request_id].headers
    assert await replicate.cancel(submission.handle) is True
    assert (await replicate.status(submission.handle)).state is ProviderState.CANCELED
    with pytest.raises(ProviderError) as caught:
        await replicate.wait(submission.handle)
    assert caught.value.code == "provider_canceled"
    done = await replicate.submit(with_prompt("done"))
    await replicate.wait(done.handle)
    assert await replicate.cancel(done.handle) is False


async def test_webhooks_start_and_completed(replicate, fake_replicate: FakeReplicate) -> None:
    before = len(fake_replicate.deliveries)
    submission = await replicate.submit(REQUEST, webhook_url=f"{fake_replicate.base}/_sink")
    job = fake_replicate.jobs[submission.request_id]
    assert job.webhook == f"{fake_replicate.base}/_sink" and job.events == ["start", "completed"]
    deliveries = fake_replicate.wait_for_delivery(before + 2)[before:before + 2]
    events = [await replicate.verify_webhook(headers, body) for headers, body in deliveries]
    assert [e.state for e in events] == [ProviderState.RUNNING, ProviderState.SUCCEEDED]
    assert {e.request_id for e in events} == {submission.request_id}
    assert events[0].delivery_id != events[1].delivery_id
    images = await replicate.result(submission.handle, output=events[1].output, request=REQUEST)
    assert len(images) == 2 and images[0].data.startswith(b"\x89PNG")


TRAINING = TrainingRequest(
    images=(TrainingImage("a.png", png(32, 32, 1)), TrainingImage("b.png", png(32, 32, 2), caption="TOK on a bike")),
    trigger_word="TOK", steps=800, model_key="custom:7:v1", provider_model="black-forest-labs/flux-dev-lora",
)


async def test_training_uploads_the_zip(replicate, fake_replicate: FakeReplicate) -> None:
    trace = ProviderTrace()
    artifact = await replicate.train(TRAINING, trace=trace)
    job = fake_replicate.jobs[trace.request_id]
    assert trace.handle == f"trainings/{job.id}" and job.destination == "acme/my-lora"
    assert job.input["trigger_word"] == "TOK" and job.input["steps"] == 800
    file_id = job.input["input_images"].rsplit("/", 1)[1]
    name, content_type, data = fake_replicate.files[file_id]
    assert name == "training_images.zip" and content_type == "application/zip"
    assert zip_names(data) == {"a.png": TRAINING.images[0].data, "b.png": TRAINING.images[1].data, "b.txt": b"TOK on a bike"}
    assert artifact.provider_model == "acme/my-lora:" + "c" * 64 and artifact.lora_path is None
    assert artifact.weights_url.endswith("/weights.tar")


async def test_training_needs_a_trainer_and_destination(closing, fake_replicate: FakeReplicate) -> None:
    provider = closing(replicate_provider(fake_replicate, training_model=None))
    with pytest.raises(ProviderError) as caught:
        await provider.submit_training(TRAINING)
    assert caught.value.code == "provider_not_configured" and "PIXELMINT_REPLICATE_TRAINING_MODEL" in str(caught.value)
    provider = closing(replicate_provider(fake_replicate, training_destination=None))
    with pytest.raises(ProviderError) as caught:
        await provider.submit_training(TRAINING)
    assert "PIXELMINT_REPLICATE_TRAINING_DESTINATION" in str(caught.value)


async def test_training_webhook(replicate, fake_replicate: FakeReplicate) -> None:
    before = len(fake_replicate.deliveries)
    submission = await replicate.submit_training(TRAINING, webhook_url=f"{fake_replicate.base}/_sink")
    headers, body = fake_replicate.wait_for_delivery(before + 2)[before + 1]
    event = await replicate.verify_webhook(headers, body)
    assert event.state is ProviderState.SUCCEEDED and event.request_id == submission.request_id
    artifact = await replicate.training_result(submission.handle, output=event.output)
    assert artifact.provider_model.startswith("acme/my-lora:")
