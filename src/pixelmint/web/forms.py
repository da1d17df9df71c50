"""The dashboard's form bodies. Like every request body they derive from ``kit/schemas.RequestModel``:
an unknown field or text PostgreSQL cannot store (NUL) is refused (422, an error page) before a
service sees it. Every form also carries ``csrftoken``, which the CSRF middleware checked first.

A page takes one as ``form: Annotated[LoginForm, Form()]``; fields have defaults so that a form
missing one is answered by the page's own message, beside the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pixelmint.kit.schemas import RequestModel


class WebForm(RequestModel):
    csrftoken: str = Field("", max_length=200)


class LoginForm(WebForm):
    email: str = Field("", max_length=1024)
    password: str = Field("", max_length=1024)
    next: str = Field("/app", max_length=2000)


class SignupForm(WebForm):
    email: str = Field("", max_length=1024)
    password: str = Field("", max_length=1024)
    name: str = Field("", max_length=200)
    team: str = Field("", max_length=200)


class InviteForm(WebForm):
    token: str = Field("", max_length=200)
    email: str = Field("", max_length=1024)
    password: str = Field("", max_length=1024)
    name: str = Field("", max_length=200)


class PasswordForm(WebForm):
    token: str = Field("", max_length=200)
    password: str = Field("", max_length=1024)
    email: str = Field("", max_length=1024)  # the hidden username field, for password managers; ignored


class KeyForm(WebForm):
    name: str = Field("default", min_length=1, max_length=200)


class RoleForm(WebForm):
    role: str = Field("member", max_length=16)


class FavoriteForm(WebForm):
    favorite: bool = True
    next: str = Field("/app/gallery", max_length=2000)


class CheckoutForm(WebForm):
    price: str = Field("", max_length=200)


class WebhookEndpointForm(WebForm):
    url: str = Field("", max_length=4096)
    description: str = Field("", max_length=500)
    event_types: list[str] = Field(default_factory=list, max_length=50)


class EnableForm(WebForm):
    enabled: bool = True


class ReplayForm(WebForm):
    since: str = Field("", max_length=64)
# Custom models and generation (web/models.py, web/generate.py). Field names are the JSON API's
# (camelCase in the HTML: ``referenceModelId``), so links and forms speak the same names.


class CreateModelForm(WebForm):
    """The fields of the new-model form besides its files (``trainingImages``)."""

    reference_model_id: str = Field("", max_length=100)
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    trigger_word: str = Field("", max_length=100)
    training_steps: int = Field(1000, ge=0, le=2**31 - 1)
    image_count: int = Field(0, ge=0, le=10_000)  # set by app.js as files are picked (the estimate's)


class RenameForm(WebForm):
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)


class RefineForm(WebForm):
    prompt: str = Field("", max_length=10_000)


class GenerateForm(WebForm):
    model: str = Field("", max_length=200)  # "ref:<id>" or "custom:<uuid>:<version>" (web/generate.py)
    prompt: str = Field("", max_length=10_000)
    negative_prompt: str = Field("", max_length=10_000)
    resolution: str = Field("1024x1024", max_length=20)
    quality: Literal["standard", "hd"] = "standard"
    num_images: int = Field(1, ge=0, le=100)
    seed: str = Field("", max_length=20)  # empty: random
