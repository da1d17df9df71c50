"""Replicate's JSON shapes (snake_case, as api.replicate.com and its SDK use them).

Sources: ``protocols.md`` §2 (wire format) and the SDK's pydantic models, which check answers:
``replicate/prediction.py`` ``Prediction`` (``id, model, version, status`` required; ``status`` one
of ``starting, processing, succeeded, failed, canceled``), ``training.py`` ``Training``,
``model.py`` ``Model`` (``url, owner, name, visibility, run_count`` required), ``version.py``
``Version`` (``id, created_at, cog_version, openapi_schema``), ``pagination.py`` ``Page``.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from pixelmint.kit.schemas import RequestModel

WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
WebhookEvent = Literal["start", "output", "logs", "completed"]
Status = Literal["starting", "processing", "succeeded", "failed", "canceled"]


class SnakeRequest(RequestModel):
    """A request body of this surface: snake_case field names; unknown fields are 422 (Replicate
    answers a misspelled top-level field with ``invalid_fields`` too)."""

    model_config = ConfigDict(alias_generator=None, extra="forbid")


class WebhookFields(SnakeRequest):
    webhook: str | None = Field(None, min_length=1, max_length=2000,
                                description="http(s) URL that receives the prediction as it changes")
    webhook_completed: str | None = Field(None, min_length=1, max_length=2000,
                                          description="Older form: a webhook for the `completed` event only")
    webhook_events_filter: list[WebhookEvent] | None = Field(
        None, max_length=4, description="Which events to send (default: all of start, output, logs, completed)")


class ModelPredictionRequest(WebhookFields):
    """``POST /v1/models/{owner}/{name}/predictions``."""

    input: dict[str, Any] = Field(description="The model's inputs: see its version's `openapi_schema`")
    stream: StrictBool | None = Field(None, description="Accepted and ignored: outputs are not streamed")


class PredictionRequest(ModelPredictionRequest):
    """``POST /v1/predictions``: ``version`` is ``owner/name``, ``owner/name:<version>`` or a bare
    version id."""

    version: str = Field(min_length=1, max_length=300)


class TrainingRequest(WebhookFields):
    """``POST /v1/models/{owner}/{name}/versions/{id}/trainings``."""

    destination: str = Field(min_length=1, max_length=300,
                             description="`<teamId>/<name>`: a new custom model named `name`, or an existing "
                             "custom model of the team (`<teamId>/<customModelId>`) to refine")
    input: dict[str, Any] = Field(default_factory=dict)


class PredictionInput(BaseModel):
    """The inputs of every Pixelmint model (a version's ``Input`` schema). Inputs other models
    take (``aspect_ratio``, ``guidance``…) are ignored, as ours have no use for them; the
    server checks the limits with its own codes (invalid_prompt, invalid_resolution…)."""

    model_config = ConfigDict(extra="ignore", title="Input")

    prompt: str = Field(description="What to draw; 1 to 2,000 characters.",
                        json_schema_extra={"x-order": 0, "minLength": 1, "maxLength": 2000})
    negative_prompt: str | None = Field(None, description="What to avoid.", json_schema_extra={"x-order": 1})
    width: int = Field(1024, description="Pixels, 64..2048, a multiple of 8.",
                       json_schema_extra={"x-order": 2, "minimum": 64, "maximum": 2048})
    height: int = Field(1024, description="Pixels, 64..2048, a multiple of 8.",
                        json_schema_extra={"x-order": 3, "minimum": 64, "maximum": 2048})
    num_outputs: int = Field(1, description="Number of images.",
                             json_schema_extra={"x-order": 4, "minimum": 1, "maximum": 4})
    seed: int | None = Field(None, description="0..2^32-1; random when omitted.",
                             json_schema_extra={"x-order": 5, "minimum": 0, "maximum": 2**32 - 1})
    quality: Literal["standard", "hd"] = Field("standard", json_schema_extra={"x-order": 6})


class TrainingInput(BaseModel):
    """A training's inputs. Creating a model: ``input_images`` (URLs of PNG/JPEG/WebP images, or
    one URL), ``trigger_word``, ``steps``, ``description``; refining one: ``prompt``."""

    model_config = ConfigDict(extra="ignore", title="TrainingInput")

    input_images: list[str] | str | None = Field(None, description="1 to 50 image URLs")
    trigger_word: str | None = Field(None, max_length=100)
    steps: int = Field(1000, description="100..10,000")
    description: str = Field("", max_length=2000)
    prompt: str | None = Field(None, description="A refinement's instruction")


class Prediction(BaseModel):
    id: str
    model: str
    version: str
    input: dict[str, Any]
    output: list[str] | None
    logs: str
    error: str | None
    status: Status
    data_removed: bool
    source: str = "api"
    created_at: str
    started_at: str | None
    completed_at: str | None
    urls: dict[str, str]
    metrics: dict[str, float]


class Training(BaseModel):
    id: str
    model: str
    version: str
    destination: str | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    logs: str
    error: str | None
    status: Status
    created_at: str
    started_at: str | None
    completed_at: str | None
    urls: dict[str, str]
    metrics: dict[str, float]


class Version(BaseModel):
    id: str
    created_at: str
    cog_version: str
    openapi_schema: dict[str, Any]


class Model(BaseModel):
    url: str
    owner: str
    name: str
    description: str | None
    visibility: Literal["public", "private"]
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    run_count: int
    cover_image_url: str | None = None
    default_example: Prediction | None = None
    latest_version: Version | None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page: ``next``/``previous`` are absolute URLs (the SDK requests them as they are)."""

    next: str | None
    previous: str | None = None
    results: list[T]


class WebhookSigningSecret(BaseModel):
    """``GET /v1/webhooks/default/secret``: the key that signs this team's prediction webhooks."""

    key: str = Field(description="whsec_ followed by the base64 of the secret (Standard Webhooks)")
