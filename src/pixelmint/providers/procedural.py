"""``procedural``: the offline default. Renders a deterministic abstract image without any model.

Determinism: image ``i`` is drawn from ``random.Random(k)`` where ``k`` is the integer value of
``SHA-256(model_key NUL prompt NUL negative_prompt NUL str(seed_i))`` and ``seed_i = (seed + i) mod
2^32``. The same prompt, model and seed give the same pixels on any machine (Pillow's drawing is
deterministic); another prompt gives a different palette and composition, and each word of the
prompt adds its own motif, so related prompts share elements.

Every PNG carries its recipe in text chunks, as A1111 and ComfyUI do: ``parameters`` (A1111's
one-line format, read by image browsers) and ``pixelmint`` (JSON).
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import json
import random
import re

from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo

from pixelmint.providers.base import GeneratedImage, GenerationRequest, ProgressCallback
from pixelmint.providers.style import derive_style, refine_style


def _digest_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest(), "big")


def _color(rng: random.Random, base_hue: float, spread: float, alpha: int | None = None) -> tuple[int, ...]:
    hue = (base_hue + rng.uniform(-spread, spread)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.35, 0.95), rng.uniform(0.35, 1.0))
    rgb = (int(r * 255), int(g * 255), int(b * 255))
    return rgb if alpha is None else (*rgb, alpha)


def render(request: GenerationRequest, index: int) -> GeneratedImage:
    """Render image ``index`` of ``request`` as PNG bytes."""
    seed = request.image_seed(index)
    negative = request.negative_prompt or ""
    rng = random.Random(_digest_int(request.model_key, request.prompt, negative, str(seed)))
    style = request.style or {}
    palette = [tuple(c) for c in style.get("palette", [])]
    base_hue = float(style.get("hue", rng.random()))
    spread = float(style.get("hue_spread", rng.uniform(0.05, 0.35)))
    cx_bias, cy_bias = style.get("composition", [None, None])
    w, h = request.width, request.height

    def fill(source: random.Random, alpha: int | None = None) -> tuple[int, ...]:
        if palette:  # a custom model draws with the colours of its training images
            r, g, b = (max(0, min(255, int(v + source.uniform(-18, 18)))) for v in source.choice(palette))
            return (r, g, b) if alpha is None else (r, g, b, alpha)
        return _color(source, base_hue, spread + 0.1, alpha=alpha)

    if palette:
        top, bottom = tuple(palette[0]), tuple(palette[min(1, len(palette) - 1)])
    else:
        top, bottom = _color(rng, base_hue, spread), _color(rng, base_hue + 0.5, spread)
    gradient = Image.linear_gradient("L")
    if rng.random() < 0.5:
        gradient = gradient.transpose(Image.Transpose.ROTATE_90)
    gradient = gradient.resize((w, h))
    image = Image.composite(Image.new("RGB", (w, h), top), Image.new("RGB", (w, h), bottom), gradient)

    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    words = [word for word in re.findall(r"\w+", request.prompt.lower()) if len(word) > 2][:24]
    motifs = [random.Random(_digest_int(request.model_key, word)) for word in words]
    motifs += [rng] * rng.randint(6, 14)
    scale = min(w, h)
    for motif in motifs:
        for _ in range(motif.randint(1, 3)):
            kind = motif.choice(("ellipse", "rectangle", "polygon", "line"))
            if cx_bias is None:
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            else:  # the training images' composition: shapes gather around their centroid
                cx, cy = rng.gauss(cx_bias * w, w / 4), rng.gauss(cy_bias * h, h / 4)
            size = scale * motif.uniform(0.05, 0.35)
            color = fill(motif, alpha=motif.randint(60, 190))
            box = (cx - size, cy - size * motif.uniform(0.4, 1.2), cx + size, cy + size * motif.uniform(0.4, 1.2))
            if kind == "ellipse":
                draw.ellipse(box, fill=color)
            elif kind == "rectangle":
                draw.rectangle((min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])), fill=color)
            elif kind == "polygon":
                sides = motif.randint(3, 7)
                draw.regular_polygon((cx, cy, size), sides, rotation=motif.uniform(0, 360), fill=color)
            else:
                draw.line(box, fill=color, width=max(1, int(size * 0.08)))
    texture = float(style.get("texture", 0.0))
    for _ in range(int(texture * 400)):  # texture: fine marks as dense as the training images' edges
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        length = scale * rng.uniform(0.005, 0.03)
        draw.line((x, y, x + length, y + rng.uniform(-length, length)), fill=fill(rng, alpha=140), width=1)
    image = Image.alpha_composite(image.convert("RGBA"), overlay)
    if negative:
        image = image.filter(ImageFilter.SMOOTH)
    image = image.convert("RGB")

    recipe = {
        "prompt": request.prompt,
        "negativePrompt": request.negative_prompt,
        "seed": seed,
        "width": w,
        "height": h,
        "quality": request.quality,
        "model": request.model_key,
        "provider": ProceduralProvider.name,
    }
    info = PngInfo()
    parameters = request.prompt
    if negative:
        parameters += f"\nNegative prompt: {negative}"
    parameters += f"\nSeed: {seed}, Size: {w}x{h}, Model: {request.model_key}, Provider: procedural"
    info.add_text("parameters", parameters)
    info.add_text("pixelmint", json.dumps(recipe, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=6 if request.quality == "hd" else 3)
    return GeneratedImage(buffer.getvalue(), "image/png", w, h, seed)


class ProceduralProvider:
    """Offline renderer. ``delay_seconds`` per image simulates model time (demos and tests)."""

    name = "procedural"

    def __init__(self, *, delay_seconds: float = 0.0) -> None:
        self.delay_seconds = delay_seconds

    async def generate(
        self, request: GenerationRequest, *, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        images = []
        for index in range(request.num_images):
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            images.append(await asyncio.to_thread(render, request, index))
            if progress is not None:
                await progress(int(100 * (index + 1) / request.num_images))
        return images

    async def train(
        self, images: list[bytes], *, trigger_word: str | None, steps: int, progress: ProgressCallback | None = None
    ) -> dict:
        """Offline training: the artifact is the style derived from the training images
        (``providers/style.py``)."""
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        style = await asyncio.to_thread(derive_style, images)
        if progress is not None:
            await progress(100)
        return {"provider": self.name, "style": style, "triggerWord": trigger_word, "steps": steps}

    async def refine(self, artifact: dict, *, prompt: str, iteration: int) -> dict:
        """Offline refinement: the style moved by the prompt (``providers/style.refine_style``)."""
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        return {**artifact, "style": refine_style(artifact.get("style", {}), prompt, iteration)}
