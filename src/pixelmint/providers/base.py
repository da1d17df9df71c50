"""The provider interface: what a generation backend is given and what it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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
