"""The storage errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import NotFound, PixelmintError


class FileNotFound(NotFound):
    """404: no stored file has that key."""

    code = "file_not_found"


class ImageNotFound(NotFound):
    """404: the team has no image with that id."""

    code = "image_not_found"


class InvalidSignature(PixelmintError):
    """403: a signed file URL whose signature does not match."""

    status_code = 403
    code = "invalid_signature"


class UrlExpired(InvalidSignature):
    """403: a signed file URL past its expiry."""

    code = "url_expired"
