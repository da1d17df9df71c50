"""Request and response shapes for custom models (camelCase JSON)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import AliasChoices, Field

from pixelmint.jobs.schemas import PROMPT_LIMITS, JobOut
from pixelmint.kit.schemas import CamelModel, Credits, RequestModel


class CreateModelJson(RequestModel):
    """``POST /api/v1/models`` as JSON (training images by URL). Multipart form data takes the same
    fields plus ``trainingImages`` files."""

    reference_model_id: str = Field(min_length=1, max_length=100, examples=["fashion-editorial"])
    name: str = Field(min_length=1, max_length=200, examples=["Autumn campaign"])
    description: str = Field("", max_length=2000)
    trigger_word: str | None = Field(None, max_length=100, examples=["ohwx"])
    training_steps: int = Field(1000, description="100..10,000 (invalid_training_steps)",
                                json_schema_extra={"minimum": 100, "maximum": 10_000})
    training_image_urls: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("trainingImages", "trainingImageUrls"),
        description="http(s) URLs of PNG/JPEG/WebP images (1 to 50 with the files; also accepted as `trainingImageUrls`)",
        json_schema_extra={"maxItems": 50},
    )


class ModelPatch(RequestModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)


class RefineRequest(RequestModel):
    prompt: str = Field(description="1 to 2,000 characters, not all spaces (invalid_prompt)",
                        examples=["warmer light, more grain"], json_schema_extra=PROMPT_LIMITS)


class ModelVersionOut(CamelModel):
    version: int
    kind: str
    prompt: str | None
    iteration: int
    cost: Credits
    artifact: dict[str, Any]
    job_id: uuid.UUID | None
    created_at: dt.datetime


class CustomModelOut(CamelModel):
    id: uuid.UUID
    name: str
    description: str
    reference_model_id: str
    status: str
    version: int
    trigger_word: str | None
    training_steps: int
    training_image_count: int
    artifact: dict[str, Any]
    error_message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    versions: list[ModelVersionOut] | None = None


class ModelWithJob(CamelModel):
    model: CustomModelOut
    job: JobOut


class ModelPage(CamelModel):
    items: list[CustomModelOut]
    next_cursor: str | None
