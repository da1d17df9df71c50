"""The dashboard's form bodies. Like every request body they derive from ``kit/schemas.RequestModel``:
an unknown field or text PostgreSQL cannot store (NUL) is refused (422, an error page) before a
service sees it. Every form also carries ``csrftoken``, which the CSRF middleware checked first.

A page takes one as ``form: Annotated[LoginForm, Form()]``; fields have defaults so that a form
missing one is answered by the page's own message, beside the field.
"""

from __future__ import annotations

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
