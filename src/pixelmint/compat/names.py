"""Model names shared by the OpenAI- and Replicate-compatible APIs (``owner/name[:version]``).

- A catalog (reference) model ``R`` is ``pixelmint/R``; its only version is ``"1"``.
- A team's custom model ``M`` is ``<teamId>/<M>`` (both UUIDs, as the native API prints them); its
  versions are the version numbers ``"1"``, ``"2"``…
- Each version also has a version id that names its model too (``version_id``), for clients that
  send the version alone, as the replicate SDK does. The owner is the team whose API key calls:
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
    the version may be the number or the model's version id (``version_id``);
    ``None`` when the text is not a name this team can use (malformed, another team's owner, a
    version that is not a positive integer). Whether the model exists is the caller's question."""
    match = _NAME.match(text.strip())
    if match is None:
        return None
    owner, name, version = match["owner"], match["name"], match["version"]
    if owner is not None and version is not None and (decoded := parse_version_id(version)) is not None:
        version = str(decoded[1]) if decoded[0] == _model_key(owner, name) else "0"  # a version id of this model
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


# --------------------------------------------------------------------------------------------
# Version ids: what ``replicate.run("owner/name:<version id>")`` sends on its own
#
# The replicate SDK sends only the part after ``:`` (``POST /v1/predictions {"version": "<id>"}``,
# ``replicate/run.py``), so a version id must name its model as well, as Replicate's do: 64
# lowercase hex digits, the model's key (a custom model's id, or a uuid5 of a catalog model's
# name) then the version number, each as 32 hex digits. A name's short version (``"1"``, ``"2"``)
# still works wherever the model is named with it (``owner/name:2``, or the model's path).

_CATALOG_KEYS = uuid.UUID("6b1c1f0e-5d2a-4c55-9a3e-706978656c6d")  # uuid5 namespace of catalog models
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")


def catalog_key(reference_model_id: str) -> uuid.UUID:
    """The model key of a catalog model in its version id (``uuid5`` of its name)."""
    return uuid.uuid5(_CATALOG_KEYS, catalog_name(reference_model_id))


def _model_key(owner: str, name: str) -> uuid.UUID | None:
    if owner == CATALOG_OWNER:
        return catalog_key(name)
    try:
        return uuid.UUID(name)
    except ValueError:
        return None


def version_id(model_key: uuid.UUID, version: int) -> str:
    """A version id: ``model_key`` (a custom model id, or ``catalog_key``) and the version number."""
    return f"{model_key.hex}{version:032x}"


def catalog_version_id(reference_model_id: str) -> str:
    """The one version id of the catalog model ``reference_model_id`` (version ``CATALOG_VERSION``)."""
    return version_id(catalog_key(reference_model_id), int(CATALOG_VERSION))


def parse_version_id(text: str) -> tuple[uuid.UUID, int] | None:
    """A version id → (model key, version number); ``None`` when ``text`` is not one."""
    if not _VERSION_ID.match(text):
        return None
    version = int(text[32:], 16)
    return (uuid.UUID(text[:32]), version) if 1 <= version <= 2**31 - 1 else None
