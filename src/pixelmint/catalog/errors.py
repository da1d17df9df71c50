"""The catalog errors: one class per stable code (the ``error`` field of the JSON body)."""

from __future__ import annotations

from pixelmint.kit.errors import Conflict, NotFound


class ModelExists(Conflict):
    """409: a reference model with that id already exists."""

    code = "model_exists"


class ModelNotFound(NotFound):
    """404: no reference model has that id (or it is inactive where an active one is required), or the team
    cannot read a custom model with that id."""

    code = "model_not_found"
