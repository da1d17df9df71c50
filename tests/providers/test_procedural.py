"""The procedural placeholder renderer: the prompt steers colour, lighting and contrast (measured on
the rendered pixels), the output is deterministic, and every image and job says it is a placeholder."""

from __future__ import annotations

import colorsys
import io
import json
import math

from PIL import Image, ImageStat

from pixelmint.providers.base import GenerationRequest
from pixelmint.providers.procedural import PLACEHOLDER_LABEL, render
from tests.builders import auth, generate_body, make_team


def draw(prompt: str, *, seed: int = 5, negative: str | None = None, model: str = "business-headshot") -> bytes:
    request = GenerationRequest(prompt=prompt, negative_prompt=negative, width=160, height=120, num_images=1,
                                seed=seed, quality="standard", model_key=model)
    return render(request, 0).data


def pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def mean_hue(data: bytes) -> float:
    """Saturation-weighted circular mean hue, 0..1 (0 = red, 1/3 = green, 2/3 = blue)."""
    sin_sum = cos_sum = 0.0
    raw = pixels(data).tobytes()
    for r, g, b in zip(raw[0::3], raw[1::3], raw[2::3], strict=True):
        h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        sin_sum += math.sin(2 * math.pi * h) * s * v
        cos_sum += math.cos(2 * math.pi * h) * s * v
    return (math.atan2(sin_sum, cos_sum) / (2 * math.pi)) % 1.0


def hue_distance(a: float, b: float) -> float:
    return min((a - b) % 1.0, (b - a) % 1.0)


def brightness(data: bytes) -> float:
    return ImageStat.Stat(pixels(data).convert("L")).mean[0]


def contrast(data: bytes) -> float:
    return ImageStat.Stat(pixels(data).convert("L")).stddev[0]


def test_colour_words_set_the_dominant_hue() -> None:
    for seed in (1, 2, 3):
        assert hue_distance(mean_hue(draw("a red bicycle", seed=seed)), 0.0) < 0.04
        assert hue_distance(mean_hue(draw("a blue bicycle", seed=seed)), 0.62) < 0.04
        assert hue_distance(mean_hue(draw("a green bicycle", seed=seed)), 0.33) < 0.04
    # a colour the negative prompt names is not drawn
    assert hue_distance(mean_hue(draw("a red or blue bicycle", negative="red")), 0.62) < 0.04


def test_lighting_words_set_the_brightness_and_warmth() -> None:
    for seed in (1, 2, 3):
        night, noon = draw("a bicycle at night", seed=seed), draw("a bicycle at noon", seed=seed)
        assert brightness(night) < 60 < 140 < brightness(noon)  # of 255
        dawn = draw("a grey bicycle at dawn", seed=seed)
        assert hue_distance(mean_hue(dawn), 0.06) < 0.06  # a grey subject under a warm (orange) sky
        assert brightness(draw("a grey bicycle at midnight", seed=seed)) < brightness(dawn)


def test_mood_words_set_the_contrast() -> None:
    for seed in (1, 2, 3):
        moody, soft = draw("a moody bicycle", seed=seed), draw("a soft bicycle", seed=seed)
        assert contrast(moody) > 2 * contrast(soft)


def test_same_prompt_model_and_seed_give_identical_bytes() -> None:
    assert draw("a red bicycle at dawn", seed=9) == draw("a red bicycle at dawn", seed=9)
    assert draw("a red bicycle at dawn", seed=9) != draw("a red bicycle at dawn", seed=10)


def test_every_png_says_it_is_a_placeholder_and_how_to_get_real_images() -> None:
    text = Image.open(io.BytesIO(draw("a red bicycle"))).text
    assert json.loads(text["pixelmint"])["provider"] == PLACEHOLDER_LABEL
    assert f"Provider: {PLACEHOLDER_LABEL}" in text["parameters"]
    assert "placeholder" in text["Comment"].lower() and "PIXELMINT_DEFAULT_PROVIDER" in text["Comment"]


async def test_a_job_it_ran_names_it_a_placeholder(api_with_worker, db) -> None:
    team = await make_team(db, plan="basic")
    reply = await api_with_worker.post("/api/v1/generate", json=generate_body(waitForResult=True), headers=auth(team))
    assert reply.status_code == 200, reply.text
    assert reply.json()["job"]["provider"] == PLACEHOLDER_LABEL == "procedural (placeholder renderer)"
