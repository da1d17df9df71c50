"""Offline "training" for the procedural provider: a style derived from images and prompts.

A style is a small JSON object the procedural renderer draws with:
``{"palette": [[r, g, b], …] (up to 6 colours, most frequent first), "hue": 0..1, "hue_spread":
0..0.5, "texture": 0..1 (edge density), "composition": [x, y] (brightness centroid, 0..1 of the
width/height), "brightness": 0..1}``.

``derive_style`` reads training images (the palette by Pillow's median-cut quantisation of all
images together, hue by the saturation-weighted circular mean); ``refine_style`` moves a style
deterministically by a refinement prompt, so every version differs and stays close to its parent.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import random
from typing import Any

from PIL import Image, ImageFilter, ImageStat

THUMB = 64  # pixels: images are analysed at this size


def _thumbnail(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((THUMB, THUMB))
    return image


def derive_style(images: list[bytes]) -> dict[str, Any]:
    """A style from training images (PNG/JPEG/WebP bytes). Raises ``ValueError`` if none decode."""
    if not images:
        raise ValueError("no training images")
    thumbs = [_thumbnail(data) for data in images]
    mosaic = Image.new("RGB", (THUMB * len(thumbs), THUMB))
    for i, thumb in enumerate(thumbs):
        mosaic.paste(thumb.resize((THUMB, THUMB)), (i * THUMB, 0))
    quantized = mosaic.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    palette_raw = quantized.getpalette() or []
    counts = sorted(quantized.getcolors() or [], reverse=True)
    palette = [palette_raw[index * 3 : index * 3 + 3] for _, index in counts if isinstance(index, int)]  # mode P: ints

    sin_sum = cos_sum = weight_sum = 0.0
    hues = []
    raw = mosaic.tobytes()
    for r, g, b in zip(raw[0::3], raw[1::3], raw[2::3], strict=True):
        h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        w = s * v
        sin_sum += math.sin(2 * math.pi * h) * w
        cos_sum += math.cos(2 * math.pi * h) * w
        weight_sum += w
        hues.append(h)
    hue = (math.atan2(sin_sum, cos_sum) / (2 * math.pi)) % 1.0 if weight_sum else 0.0
    concentration = math.hypot(sin_sum, cos_sum) / weight_sum if weight_sum else 0.0
    gray = mosaic.convert("L")
    edges = gray.filter(ImageFilter.FIND_EDGES)
    texture = min(1.0, ImageStat.Stat(edges).mean[0] / 64)
    xs = ys = total = 0.0
    width, height = gray.size
    for i, value in enumerate(gray.tobytes()):
        x, y = (i % width) % THUMB, i // width
        xs += x * value
        ys += y * value
        total += value
    composition = [round(xs / total / THUMB, 4), round(ys / total / height, 4)] if total else [0.5, 0.5]
    return {
        "palette": palette,
        "hue": round(hue, 4),
        "hue_spread": round(0.05 + 0.45 * (1 - concentration), 4),
        "texture": round(texture, 4),
        "composition": composition,
        "brightness": round(ImageStat.Stat(gray).mean[0] / 255, 4),
    }


def refine_style(style: dict[str, Any], prompt: str, iteration: int) -> dict[str, Any]:
    """The style of the next version: nudged by the prompt (hash-seeded), same family."""
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{iteration}\x00{prompt}".encode()).digest()[:8], "big"))
    refined = dict(style)
    refined["hue"] = round((style.get("hue", 0.0) + rng.uniform(-0.08, 0.08)) % 1.0, 4)
    refined["hue_spread"] = round(min(0.5, max(0.02, style.get("hue_spread", 0.2) * rng.uniform(0.7, 1.3))), 4)
    refined["texture"] = round(min(1.0, max(0.0, style.get("texture", 0.3) + rng.uniform(-0.2, 0.2))), 4)
    cx, cy = style.get("composition", [0.5, 0.5])
    refined["composition"] = [round(min(0.9, max(0.1, cx + rng.uniform(-0.15, 0.15))), 4),
                              round(min(0.9, max(0.1, cy + rng.uniform(-0.15, 0.15))), 4)]
    palette = [list(c) for c in style.get("palette", [])]
    if palette:
        accent = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0))
        palette[-1] = [int(v * 255) for v in accent]
    refined["palette"] = palette
    refined["refinements"] = [*style.get("refinements", []), prompt[:200]]
    return refined
