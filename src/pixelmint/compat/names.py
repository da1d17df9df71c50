"""Model names shared by the OpenAI- and Replicate-compatible APIs (``owner/name[:version]``).

- A catalog (reference) model ``R`` is ``pixelmint/R``; its only version is ``"1"``.
- A team's custom model ``M`` is ``<teamId>/<M>`` (both UUIDs, as the native API prints them); its
  versions are the version numbers ``"1"``, ``"2"``… The owner is the team whose API key calls:
  another team's name is "not found", as in the native API.
- The OpenAI side also accepts a bare reference model id (``fashion-editorial``), as its ``model``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

CATALOG_OWNER = "pixelmint"
CATALOG_VERSION = "1"
_NAME = re.compile(r"^(?:(?P<owner>[^/:\s]+)/)?(?P<name>[^/:\s]+)(?::(?P<version>[^/:\s]+))?$")


@dataclass(frozen=True)
class ModelName:
    """What a compat model name points at: a reference model, or a custom model (and a version)."""

    reference_model_id: str | None = None
    custom_model_id: uuid.UUID | None = None
    version: int | None = None  # a custom model's version number; None = its latest


def catalog_name(reference_model_id: str) -> str:
    return f"{CATALOG_OWNER}/{reference_model_id}"


def custom_name(team_id: uuid.UUID, custom_model_id: uuid.UUID) -> str:
    return f"{team_id}/{custom_model_id}"


def parse_model_name(text: str, team_id: uuid.UUID, *, bare_reference: bool = False) -> ModelName | None:
    """``owner/name[:version]`` (or a bare reference id when ``bare_reference``) -> ``ModelName``;
    ``None`` when the text is not a name this team can use (malformed, another team's owner, a
    version that is not a positive integer). Whether the model exists is the caller's question."""
    match = _NAME.match(text.strip())
    if match is None:
        return None
    owner, name, version = match["owner"], match["name"], match["version"]
    if owner is None:
        return ModelName(reference_model_id=name) if bare_reference and version is None else None
    if owner == CATALOG_OWNER:
        return ModelName(reference_model_id=name) if version in (None, CATALOG_VERSION) else None
    try:
        owner_id, model_id = uuid.UUID(owner), uuid.UUID(name)
    except ValueError:
        return None
    if owner_id != team_id:
        return None
    if version is None:
        return ModelName(custom_model_id=model_id)
    if not version.isdigit() or not 1 <= int(version) <= 2**31 - 1:
        return None
    return ModelName(custom_model_id=model_id, version=int(version))
