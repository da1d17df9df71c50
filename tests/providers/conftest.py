"""Local fake providers (one uvicorn server each, for the session) and providers pointed at them
through the official SDKs' base-URL settings (protocols.md §4). Nothing leaves 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pixelmint.providers.remote import PollPolicy
from tests.providers.fake_fal import GOOD_KEY as FAL_KEY
from tests.providers.fake_fal import FakeFal
from tests.providers.fake_openai import GOOD_KEY as OPENAI_KEY
from tests.providers.fake_openai import FakeOpenAI
from tests.providers.fake_replicate import GOOD_TOKEN, TRAINER, TRAINER_VERSION, WEBHOOK_SECRET, FakeReplicate
from tests.providers.localserver import LocalServer

FAST = PollPolicy(interval=0.01, max_interval=0.05, generation_timeout=10, training_timeout=10)


def _serve(fake) -> Iterator:
    with LocalServer(fake.app) as server:
        fake.base = server.url
        yield fake


@pytest.fixture(scope="session")
def fake_fal() -> Iterator[FakeFal]:
    yield from _serve(FakeFal())


@pytest.fixture(scope="session")
def fake_replicate() -> Iterator[FakeReplicate]:
    yield from _serve(FakeReplicate())


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    yield from _serve(FakeOpenAI())


def fal_provider(fake: FakeFal, *, key: str = FAL_KEY, poll: PollPolicy = FAST, **kwargs):
    from pixelmint.providers.fal import FalProvider

    return FalProvider(
        key=key, base_url=fake.base, rest_url=fake.base, cdn_url=fake.base,
        jwks_url=f"{fake.base}/.well-known/jwks.json", poll=poll, request_timeout=5, **kwargs,
    )


def replicate_provider(fake: FakeReplicate, *, token: str = GOOD_TOKEN, poll: PollPolicy = FAST, **kwargs):
    from pixelmint.providers.replicate import ReplicateProvider

    kwargs.setdefault("training_model", f"{TRAINER}:{TRAINER_VERSION}")
    kwargs.setdefault("training_destination", "acme/my-lora")
    kwargs.setdefault("webhook_secret", WEBHOOK_SECRET)
    return ReplicateProvider(api_token=token, base_url=fake.base, poll=poll, request_timeout=5, **kwargs)


def openai_provider(fake: FakeOpenAI, *, key: str = OPENAI_KEY, **kwargs):
    from pixelmint.providers.openai_images import OpenAIImagesProvider

    kwargs.setdefault("max_retries", 0)
    return OpenAIImagesProvider(api_key=key, base_url=f"{fake.base}/v1", timeout=5, request_timeout=5, **kwargs)


@pytest.fixture
async def fal(fake_fal: FakeFal) -> AsyncIterator:
    provider = fal_provider(fake_fal)
    yield provider
    await provider.aclose()


@pytest.fixture
async def replicate(fake_replicate: FakeReplicate) -> AsyncIterator:
    provider = replicate_provider(fake_replicate)
    yield provider
    await provider.aclose()


@pytest.fixture
async def openai_images(fake_openai: FakeOpenAI) -> AsyncIterator:
    provider = openai_provider(fake_openai)
    yield provider
    await provider.aclose()


@pytest.fixture
async def closing() -> AsyncIterator:
    """``closing(provider)`` returns the provider and closes it after the test."""
    providers: list = []

    def keep(provider):
        providers.append(provider)
        return provider

    yield keep
    for provider in providers:
        await provider.aclose()
