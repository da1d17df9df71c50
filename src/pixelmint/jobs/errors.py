"""The jobs errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import Conflict, InvalidRequest, NotFound


class InvalidNumImages(InvalidRequest):
    """422: numImages is outside 1..the configured maximum."""

    code = "invalid_num_images"


class InvalidPrompt(InvalidRequest):
    """422: a prompt (a generation's, or a custom model's refinement) is empty or longer than the configured
    maximum."""

    code = "invalid_prompt"


class InvalidResolution(InvalidRequest):
    """422: the resolution is not 'WIDTHxHEIGHT', or a side is out of range or not a multiple of 8."""

    code = "invalid_resolution"


class InvalidSeed(InvalidRequest):
    """422: the seed is outside 0..2**32-1."""

    code = "invalid_seed"


class JobFinished(Conflict):
    """409: the job to cancel already finished."""

    code = "job_finished"


class JobNotFound(NotFound):
    """404: the team has no job with that id."""

    code = "job_not_found"


class ModelRequired(InvalidRequest):
    """422: the request gives neither or both of referenceModelId and customModelId."""

    code = "model_required"


class PromptTooLong(InvalidRequest):
    """422: the prompt or negative prompt is longer than the configured maximum."""

    code = "prompt_too_long"


class WebhookNotConfigured(NotFound):
    """404: a provider webhook arrives for a provider that is not configured or takes no webhooks
    (``providers.registry.ProviderNotConfigured``, 503, is a job's provider missing)."""

    code = "webhook_not_configured"
