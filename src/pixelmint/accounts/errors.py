"""The accounts errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized


class InvalidApiKey(Unauthorized):
    """401: the API key is unknown or revoked."""

    code = "invalid_api_key"


class MissingApiKey(Unauthorized):
    """401: the request sends no 'Authorization: Bearer <apiKey>' header."""

    code = "missing_api_key"


class TeamNotFound(NotFound):
    """404: no team has that id (or, for credits, it has no credit balance)."""

    code = "team_not_found"


class UnknownPlan(InvalidRequest):
    """422: no plan has that code."""

    code = "unknown_plan"


class InvalidCredentials(Unauthorized):
    """401: sign-in with an email and password that do not match a person (unknown email and wrong
    password get this same answer)."""

    code = "invalid_credentials"


class InvalidEmail(InvalidRequest):
    """422: the text given as an email address is not one."""

    code = "invalid_email"


class WeakPassword(InvalidRequest):
    """422: the password is shorter than 8 characters (or longer than 1024)."""

    code = "weak_password"


class EmailTaken(Conflict):
    """409: another person already signs in with that email."""

    code = "email_taken"


class InvalidLink(NotFound):
    """404: an invite or set-password link that is unknown, used, revoked or expired."""

    code = "invalid_link"


class MemberNotFound(NotFound):
    """404: no member of the caller's team has that id."""

    code = "member_not_found"


class ApiKeyNotFound(NotFound):
    """404: no API key of the caller's team has that id."""

    code = "api_key_not_found"


class SessionNotFound(NotFound):
    """404: no sign-in session the caller may see has that id."""

    code = "session_not_found"


class InviteNotFound(NotFound):
    """404: no open invite of the caller's team has that id."""

    code = "invite_not_found"


class RoleForbidden(Forbidden):
    """403: the caller's role does not allow this (owner and admin manage keys and members; only
    an owner grants, changes or removes the owner role)."""

    code = "role_forbidden"


class LastOwner(Conflict):
    """409: the change would leave the team without an owner."""

    code = "last_owner"
