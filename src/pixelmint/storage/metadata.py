"""What a stored PNG says about itself: its text chunks (``tEXt``/``iTXt``/``zTXt``), where image
generators keep their recipe. Pixelmint's renderers write ``parameters`` (A1111's one-line format:
the prompt, ``Negative prompt: …``, then ``Seed: …, Size: …, Model: …``), ``pixelmint`` (the same
as JSON) and ``Comment`` (``providers/procedural.py``, ``providers/diffusers_local.py``)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

MAX_TEXT = 20_000  # characters kept per chunk


@dataclass(frozen=True)
class PngMetadata:
    """``text``: every text chunk (key → value); ``recipe``: the ``pixelmint`` chunk's JSON object
    (empty when absent or not JSON)."""

    text: dict[str, str] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)


def read_png_metadata(data: bytes) -> PngMetadata:
    """The text chunks of ``data`` (a PNG; anything else gives empty metadata, never an error)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            chunks = dict(getattr(image, "text", {}) or {})
    except (UnidentifiedImageError, OSError, ValueError):
        return PngMetadata()
    text = {str(k): str(v)[:MAX_TEXT] for k, v in chunks.items()}
    try:
        recipe = json.loads(text.get("pixelmint", ""))
    except ValueError:
        recipe = {}
    return PngMetadata(text, recipe if isinstance(recipe, dict) else {})
