"""The shared pieces: training archives, tqdm progress, image checks, HTTP error mapping, the
provider registry."""

from __future__ import annotations

import pytest

from pixelmint.providers.base import ProviderError, TrainingImage
from pixelmint.providers.registry import ProviderNotConfigured, Providers
from pixelmint.providers.remote import (
    decode_data_uri,
    decode_image,
    http_status_error,
    parse_progress,
    training_archive,
)
from pixelmint.settings import Settings
from tests.providers.fake_fal import zip_names
from tests.providers.localserver import png


def test_training_archive_is_safe_unique_and_deterministic() -> None:
    images = [TrainingImage("/tmp/../a b.PNG", b"1", caption="cap"), TrainingImage("a b.png", b"2"), TrainingImage("", b"3")]
    data = training_archive(images)
    assert zip_names(data) == {"a_b.png": b"1", "a_b.txt": b"cap", "a_b_2.png": b"2", "image_002.png": b"3"}
    assert training_archive(images) == data
    with pytest.raises(ProviderError):
        training_archive([])


def test_parse_progress() -> None:
    assert parse_progress(["loading", " 45%|████▌     | 9/20 [00:02<00:03]", "saving"]) == 45
    assert parse_progress(["no bar here"]) is None


def test_decode_image() -> None:
    image = decode_image(png(40, 30), seed=3)
    assert (image.width, image.height, image.content_type, image.seed) == (40, 30, "image/png", 3)
    with pytest.raises(ProviderError) as caught:
        decode_image(b"GIF89a-not-really", seed=0)
    assert caught.value.code == "provider_bad_result"
    with pytest.raises(ProviderError):
        decode_data_uri("data:image/png,plain")


@pytest.mark.parametrize("status, during, code, retryable", [
    (401, "submit", "provider_auth_failed", False),
    (403, "status", "provider_auth_failed", False),
    (404, "submit", "provider_model_not_found", False),
    (404, "status", "provider_request_not_found", False),
    (422, "submit", "provider_invalid_request", False),
    (429, "submit", "provider_busy", True),
    (500, "submit", "provider_unavailable", True),
    (503, "status", "provider_unavailable", True),
])
def test_http_status_mapping(status: int, during: str, code: str, retryable: bool) -> None:
    error = http_status_error("x", status, "detail", during=during, credential_setting="PIXELMINT_X_KEY", model="m", model_source="PIXELMINT_X_MODEL")
    assert (error.code, error.retryable) == (code, retryable)


async def test_registry_registers_only_configured_providers(tmp_path) -> None:
    bare = Providers.from_settings(Settings(data_dir=tmp_path))
    assert bare.names() == ["procedural"] and bare.remote("procedural") is None
    with pytest.raises(ProviderNotConfigured):
        bare.get("fal")
    full = Providers.from_settings(Settings(data_dir=tmp_path, fal_key="k", replicate_api_token="r8", openai_api_key="sk"))
    assert full.names() == ["fal", "openai", "procedural", "replicate"]
    assert full.remote("fal").supports_training and not full.remote("openai").supports_webhooks
    await full.aclose()
