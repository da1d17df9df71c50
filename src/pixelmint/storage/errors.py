"""The storage errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import NotFound


class FileNotFound(NotFound):
    """404: no stored file has that key."""

    code = "file_not_found"


class ImageNotFound(NotFound):
    """404: the team has no image with that id."""

    code = "image_not_found"
