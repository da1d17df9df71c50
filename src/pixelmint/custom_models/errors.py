"""The custom_models errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import Conflict, Forbidden, InvalidRequest, NotFound


class ImageTooLarge(InvalidRequest):
    """422: a training image has more pixels than the configured maximum."""

    code = "image_too_large"



class InvalidTrainingImages(InvalidRequest):
    """422: too few or too many training images, or one is not an http(s) URL, too large, or not an image."""

    code = "invalid_training_images"


class InvalidTrainingSteps(InvalidRequest):
    """422: trainingSteps is out of range."""

    code = "invalid_training_steps"


class ModelDeleted(Conflict):
    """409: the custom model was deleted."""

    code = "model_deleted"



class ModelNotReady(Conflict):
    """409: the custom model is not ready (still training, or failed)."""

    code = "model_not_ready"


class ModelVersionNotFound(NotFound):
    """404: the custom model has no such version."""

    code = "model_version_not_found"


class PlanUpgradeRequired(Forbidden):
    """403: the team's plan (free) does not allow training models, nor paid (non-free) generations."""

    code = "plan_upgrade_required"


class TrainingImageUnreachable(InvalidRequest):
    """422: a training image URL could not be downloaded."""

    code = "training_image_unreachable"


class TrainingImageUrlNotAllowed(InvalidRequest):
    """422: a training image URL points into a private network."""

    code = "training_image_url_not_allowed"
