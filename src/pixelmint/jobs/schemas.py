"""Request and response shapes for generation and jobs (camelCase JSON)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool
from pydantic.json_schema import JsonDict

from pixelmint.kit.schemas import RESOLUTION_PATTERN, CamelModel, Credits, RequestModel
from pixelmint.storage.schemas import ImageOut

PROMPT_LIMITS: JsonDict = {"minLength": 1, "maxLength": 2000, "pattern": r"\S"}  # PIXELMINT_MAX_PROMPT_LENGTH


class GenerateRequest(RequestModel):
    """``POST /api/v1/generate``. Exactly one of ``referenceModelId`` / ``customModelId``.

    The limits of prompt, resolution, numImages and seed (the defaults of the server's settings)
    are in the schema; the server checks them with their own codes (invalid_prompt,
    prompt_too_long, invalid_resolution, invalid_num_images, invalid_seed)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["referenceModelId"], "properties": {"referenceModelId": {"type": "string"}}},
        {"required": ["customModelId"], "properties": {"customModelId": {"type": "string"}}},
    ]})

    reference_model_id: str | None = Field(None, min_length=1, max_length=100, examples=["business-headshot"])
    custom_model_id: uuid.UUID | None = None
    custom_model_version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="A version of the custom model (default: its latest).")
    prompt: str = Field(description="What to draw; 1 to 2,000 characters, not all spaces.",
                        examples=["a red bicycle at dawn"], json_schema_extra=PROMPT_LIMITS)
    negative_prompt: str | None = Field(None, json_schema_extra={"maxLength": 2000})
    resolution: str = Field("1024x1024", description="WIDTHxHEIGHT in pixels, each 64..2048 and a multiple of 8.",
                            json_schema_extra={"pattern": RESOLUTION_PATTERN})
    quality: Literal["standard", "hd"] = "standard"
    num_images: int = Field(1, description="1 to 4 images.", json_schema_extra={"minimum": 1, "maximum": 4})
    seed: int | None = Field(None, description="0..2^32-1; random (and returned) when omitted.",
                             json_schema_extra={"minimum": 0, "maximum": 2**32 - 1})
    wait_for_result: StrictBool = Field(False, description="Wait (bounded) for the job to finish and answer 200.")


class JobError(CamelModel):
    code: str
    message: str


class JobOut(CamelModel):
    id: uuid.UUID
    type: str
    status: str
    progress: int = Field(description="0..100")
    provider: str = Field(description="The backend that runs the job: fal, replicate, openai, diffusers, or "
                          "`procedural (placeholder renderer)` (the offline default, no image model).")
    reference_model_id: str | None
    custom_model_id: uuid.UUID | None
    custom_model_version: int | None
    params: dict[str, Any]
    result: dict[str, Any]
    estimated_credits: Credits
    reserved_credits: Credits
    charged_credits: Credits | None
    is_free: bool
    attempt: int
    max_attempts: int
    cancel_requested: bool
    error: JobError | None
    images: list[ImageOut]
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobEnvelope(CamelModel):
    job: JobOut
    free_generations_remaining: int | None = None


class JobPage(CamelModel):
    items: list[JobOut]
    next_cursor: str | None


class CreditEntryOut(CamelModel):
    id: int
    type: str
    amount: Credits
    reserved_delta: Credits
    created_at: dt.datetime
    description: str | None


class JobLogOut(CamelModel):
    at: dt.datetime
    message: str


class JobDetail(CamelModel):
    job: JobOut
    credit_transactions: list[CreditEntryOut]
    logs: list[JobLogOut]
