"""OpenAI's JSON shapes (snake_case, as OpenAI sends them): ``CreateImageRequest``,
``ImagesResponse``, ``Model`` and ``ListModelsResponse`` of openai/openai-openapi ``openapi.yaml``
(protocols.md §3.1, §3.2, §3.5)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pixelmint.kit.schemas import Credits, RequestModel

OPENAI_SIZES = ("1024x1024", "1536x1024", "1024x1536", "256x256", "512x512", "1792x1024", "1024x1792")
Quality = Literal["standard", "hd", "low", "medium", "high", "xhigh", "max", "auto"]


class ImageGenerationRequest(RequestModel):
    """``POST /openai/v1/images/generations``.

    Unlike the native bodies, unknown fields are ignored: each SDK release sends fields older
    servers never knew (openai 3.57 adds ``complexity``, ``frame_count``, ``svg``…;
    dashboard-and-compat.md §D.1). Text that PostgreSQL cannot store is still refused, and every
    field is bounded. ``negative_prompt`` and ``seed`` are Pixelmint's own (``extra_body=``)."""

    model_config = ConfigDict(extra="ignore", alias_generator=None, title="CreateImageRequest")

    prompt: str = Field(min_length=1, max_length=32_000, description="Also limited by PIXELMINT_MAX_PROMPT_LENGTH.")
    model: str | None = Field(None, max_length=300, description="pixelmint/<referenceModelId>, a bare reference "
                              "model id, or <teamId>/<customModelId>[:version]; default: the server's.")
    n: int | None = Field(None, ge=1, le=10, description="Also limited by PIXELMINT_MAX_IMAGES_PER_REQUEST.")
    size: str | None = Field(None, max_length=32, description="An OpenAI size, auto (1024x1024), or any "
                             "WIDTHxHEIGHT the native API takes.")
    quality: Quality | None = Field(None, description="standard, low, medium, auto: standard; hd, high, xhigh, max: hd.")
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "webp", "jpeg", "gif", "svg"] | None = Field(None, description="png only.")
    output_compression: int | None = Field(None, ge=0, le=100, description="Ignored (png).")
    background: Literal["transparent", "opaque", "auto"] | None = Field(None, description="Not transparent.")
    stream: bool | None = Field(None, description="Not true: images come in the answer.")
    partial_images: int | None = Field(None, ge=0, le=3, description="Ignored.")
    style: str | None = Field(None, max_length=100, description="Ignored.")
    moderation: str | None = Field(None, max_length=100, description="Ignored.")
    user: str | None = Field(None, max_length=1000, description="Ignored.")
    negative_prompt: str | None = Field(None, max_length=32_000, description="Pixelmint: what not to draw.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Pixelmint: 0..2^32-1; random when omitted.")


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class PixelmintDetails(BaseModel):
    """Pixelmint's own fields of an answer (the SDK keeps them: ``response.model_extra``)."""

    job_id: str
    charged_credits: Credits
    free_generations_remaining: int


class ImagesResponse(BaseModel):
    created: int = Field(description="Unix seconds")
    data: list[ImageData]
    size: str
    output_format: Literal["png"] = "png"
    background: Literal["opaque"] = "opaque"
    pixelmint: PixelmintDetails


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds")
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
