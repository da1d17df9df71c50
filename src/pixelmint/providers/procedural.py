"""``procedural``: the offline default, a placeholder renderer. It draws a deterministic abstract
image without any model; set ``PIXELMINT_DEFAULT_PROVIDER`` (``fal``, ``replicate``, ``openai`` or
``diffusers``, with its credentials) for real images. Jobs it ran show ``provider: "procedural
(placeholder renderer)"`` (``PLACEHOLDER_LABEL``), and every PNG says so in its ``Comment`` chunk.

The prompt steers the picture (``read_prompt``): colour words set the palette (``COLOURS``: "a red
bicycle" is mostly red; they take precedence over a custom model's palette), light and time-of-day words the lighting (``LIGHTING``: dawn and sunset a
warm gradient, night dark, noon bright), mood words the contrast (``MOODS``: moody and dramatic
high, soft and pastel low). A colour word that the negative prompt also names is left out.

Determinism: image ``i`` is drawn from ``random.Random(k)`` where ``k`` is the integer value of
``SHA-256(model_key NUL prompt NUL negative_prompt NUL str(seed_i))`` and ``seed_i = (seed + i) mod
2^32``. The same prompt, model and seed give the same pixels on any machine (Pillow's drawing is
deterministic); another prompt gives a different composition, and each word of the prompt adds its
own motif, so related prompts share elements.

Every PNG carries its recipe in text chunks, as A1111 and ComfyUI do: ``parameters`` (A1111's
one-line format, read by image browsers) and ``pixelmint`` (JSON), plus ``Comment`` (the
placeholder notice).
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import json
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from PIL.PngImagePlugin import PngInfo

from pixelmint.providers.base import GeneratedImage, GenerationRequest, ProgressCallback
from pixelmint.providers.style import derive_style, refine_style

PLACEHOLDER_LABEL = "procedural (placeholder renderer)"
PLACEHOLDER_NOTICE = (
    "Placeholder image drawn by Pixelmint's offline procedural renderer, not by an image model. For real "
    "images set PIXELMINT_DEFAULT_PROVIDER to fal, replicate, openai or diffusers, with its credentials "
    "(README, Providers)."
)

# Colour words → (hue, saturation, value), each 0..1.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.0, 0.85, 0.85), "scarlet": (0.99, 0.9, 0.9), "crimson": (0.97, 0.85, 0.7),
    "maroon": (0.98, 0.8, 0.45), "burgundy": (0.96, 0.75, 0.45), "orange": (0.07, 0.85, 0.95),
    "amber": (0.11, 0.9, 0.95), "gold": (0.13, 0.8, 0.9), "golden": (0.13, 0.8, 0.9),
    "yellow": (0.16, 0.8, 0.95), "lime": (0.25, 0.8, 0.85), "green": (0.33, 0.7, 0.7),
    "emerald": (0.4, 0.75, 0.7), "olive": (0.17, 0.6, 0.5), "mint": (0.42, 0.4, 0.9),
    "teal": (0.5, 0.75, 0.55), "turquoise": (0.48, 0.7, 0.85), "cyan": (0.5, 0.75, 0.9),
    "aqua": (0.5, 0.6, 0.95), "blue": (0.62, 0.75, 0.85), "azure": (0.58, 0.7, 0.95),
    "navy": (0.64, 0.8, 0.4), "cobalt": (0.61, 0.8, 0.7), "indigo": (0.7, 0.75, 0.5),
    "purple": (0.78, 0.65, 0.65), "violet": (0.75, 0.55, 0.8), "lavender": (0.74, 0.3, 0.9),
    "magenta": (0.86, 0.8, 0.85), "pink": (0.93, 0.45, 0.95), "rose": (0.95, 0.55, 0.9),
    "brown": (0.07, 0.65, 0.45), "tan": (0.09, 0.4, 0.75), "beige": (0.1, 0.25, 0.9),
    "cream": (0.12, 0.15, 0.97), "black": (0.0, 0.0, 0.08), "white": (0.0, 0.0, 0.96),
    "gray": (0.0, 0.0, 0.55), "grey": (0.0, 0.0, 0.55), "silver": (0.0, 0.0, 0.75),
}
# Light and time-of-day words → a lighting.
LIGHTING: dict[str, str] = {
    **dict.fromkeys(("dawn", "sunrise", "sunset", "dusk", "twilight", "golden"), "warm"),
    **dict.fromkeys(("night", "midnight", "nighttime", "moonlight", "moonlit", "dark", "starry"), "night"),
    **dict.fromkeys(("noon", "midday", "daylight", "daytime", "sunny", "sunlit", "bright"), "bright"),
}
# Mood words → contrast factor (1 = as drawn).
MOODS: dict[str, float] = {
    **dict.fromkeys(("moody", "dramatic", "noir", "stark", "intense", "gritty", "contrasty"), 1.8),
    **dict.fromkeys(("soft", "pastel", "calm", "dreamy", "gentle", "hazy", "misty", "muted", "faded"), 0.5),
}


@dataclass(frozen=True)
class Look:
    """What the prompt asks of the picture: colours (HSV, in prompt order), lighting (``warm``,
    ``night``, ``bright`` or None) and a contrast factor."""

    colours: tuple[tuple[float, float, float], ...] = ()
    lighting: str | None = None
    contrast: float = 1.0


def read_prompt(prompt: str, negative_prompt: str | None = None) -> Look:
    """The ``Look`` of a prompt; the first lighting and mood word win, colour words keep their order."""
    words = re.findall(r"[a-z]+", prompt.lower())
    unwanted = set(re.findall(r"[a-z]+", (negative_prompt or "").lower()))
    colours = tuple(dict.fromkeys(COLOURS[w] for w in words if w in COLOURS and w not in unwanted))
    lighting = next((LIGHTING[w] for w in words if w in LIGHTING), None)
    contrast = next((MOODS[w] for w in words if w in MOODS), 1.0)
    return Look(colours, lighting, contrast)


def _digest_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest(), "big")


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(1.0, max(0.0, s)), min(1.0, max(0.0, v)))
    return int(r * 255), int(g * 255), int(b * 255)


def _color(rng: random.Random, base_hue: float, spread: float) -> tuple[int, int, int]:
    return _rgb(base_hue + rng.uniform(-spread, spread), rng.uniform(0.35, 0.95), rng.uniform(0.35, 1.0))


def _named(rng: random.Random, colours: tuple[tuple[float, float, float], ...]) -> tuple[int, int, int]:
    """One of the prompt's colours, slightly varied."""
    h, s, v = rng.choice(colours)
    return _rgb(h + rng.uniform(-0.02, 0.02), s + rng.uniform(-0.1, 0.1), v + rng.uniform(-0.15, 0.1))


def _vertical(w: int, h: int, top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    gradient = Image.linear_gradient("L").resize((w, h))
    return Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), gradient)


def _light(image: Image.Image, lighting: str | None) -> Image.Image:
    """Warm: a peach-to-orange sky over the picture; night: dark and blue; bright: lifted."""
    w, h = image.size
    if lighting == "warm":
        return Image.blend(image, _vertical(w, h, (255, 150, 120), (255, 120, 30)), 0.4)
    if lighting == "night":
        return Image.blend(ImageEnhance.Brightness(image).enhance(0.3), Image.new("RGB", (w, h), (15, 25, 70)), 0.25)
    if lighting == "bright":
        return Image.blend(ImageEnhance.Brightness(image).enhance(1.1), Image.new("RGB", (w, h), (255, 252, 240)), 0.4)
    return image


def render(request: GenerationRequest, index: int) -> GeneratedImage:
    """Render image ``index`` of ``request`` as PNG bytes."""
    seed = request.image_seed(index)
    negative = request.negative_prompt or ""
    look = read_prompt(request.prompt, negative)
    rng = random.Random(_digest_int(request.model_key, request.prompt, negative, str(seed)))
    style = request.style or {}
    palette = [tuple(c) for c in style.get("palette", [])]
    base_hue = float(style.get("hue", rng.random()))
    spread = float(style.get("hue_spread", rng.uniform(0.05, 0.35)))
    cx_bias, cy_bias = style.get("composition", [None, None])
    w, h = request.width, request.height

    def fill(source: random.Random, alpha: int) -> tuple[int, ...]:
        if look.colours:  # the prompt's colours come first
            return (*_named(source, look.colours), alpha)
        if palette:  # a custom model draws with the colours of its training images
            r, g, b = (max(0, min(255, int(v + source.uniform(-18, 18)))) for v in source.choice(palette))
            return (r, g, b, alpha)
        return (*_color(source, base_hue, spread + 0.1), alpha)

    if look.colours:
        hue, sat, value = look.colours[0]
        top, bottom = _rgb(hue, sat, value), _rgb(*look.colours[1]) if len(look.colours) > 1 else _rgb(hue, sat, value * 0.55)
    elif palette:
        top, bottom = tuple(palette[0]), tuple(palette[min(1, len(palette) - 1)])
    else:
        top, bottom = _color(rng, base_hue, spread), _color(rng, base_hue + 0.5, spread)
    image = _vertical(w, h, top, bottom)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.ROTATE_90).resize((w, h))

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
    image = ImageEnhance.Contrast(image.convert("RGB")).enhance(look.contrast)
    image = _light(image, look.lighting)

    recipe = {
        "prompt": request.prompt,
        "negativePrompt": request.negative_prompt,
        "seed": seed,
        "width": w,
        "height": h,
        "quality": request.quality,
        "model": request.model_key,
        "provider": PLACEHOLDER_LABEL,
    }
    info = PngInfo()
    parameters = request.prompt
    if negative:
        parameters += f"\nNegative prompt: {negative}"
    parameters += f"\nSeed: {seed}, Size: {w}x{h}, Model: {request.model_key}, Provider: {PLACEHOLDER_LABEL}"
    info.add_text("parameters", parameters)
    info.add_text("pixelmint", json.dumps(recipe, sort_keys=True))
    info.add_text("Comment", PLACEHOLDER_NOTICE)
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
