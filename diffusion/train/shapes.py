"""A procedural, seeded dataset: 64x64 images of one coloured shape on a plain background, with captions.

Nothing is downloaded: every sample is drawn from a ``numpy`` generator seeded by
``(seed, index)``, so sample ``i`` is the same whatever order or batch asks for it.
Shapes are drawn 4x larger with Pillow and box-filtered down, which anti-aliases the
edges the same way on every machine.

Captions follow one small grammar, ``a [small|large] <colour> <shape> [in the <place>]
[on a <colour> background]``; a part that is left out is still drawn (at random), so the
model learns what the words pin down and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
_SUPER = 4  # supersampling factor for anti-aliased edges

#: Named colours, chosen far apart in hue or lightness so "the nearest name" is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 130, 20),
    "purple": (140, 40, 180),
}
SHAPES = ("circle", "square", "triangle", "star", "ring")
#: Named places: centre of the shape as fractions of the image size.
PLACES: dict[str, tuple[float, float]] = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}
#: Shape radius in pixels (of the 64-pixel image) per size word; None is the unnamed middle size.
RADII: dict[str | None, tuple[float, float]] = {"small": (7.0, 10.0), None: (13.0, 17.0), "large": (19.0, 24.0)}


@dataclass(frozen=True)
class ShapeSample:
    """What one image shows and how it is described."""

    shape: str
    colour: str
    background: str
    size_word: str | None
    place: str | None
    centre: tuple[float, float]
    radius: float
    caption: str


def caption_for(shape: str, colour: str, background: str | None, size_word: str | None, place: str | None) -> str:
    """Caption: ``a [size] <colour> <shape> [in the <place>] [on a <colour> background]`` ("an" before vowels)."""
    first = size_word or colour
    words = [_article(first), *([size_word] if size_word else []), colour, shape]
    if place:
        words += ["in", "the", place]
    if background:
        words += ["on", _article(background), background, "background"]
    return " ".join(words)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(seed: int, index: int) -> ShapeSample:
    """Draw sample ``index`` of the dataset seeded by ``seed`` (pure: no shared state)."""
    rng = np.random.default_rng([seed, index])
    shape = SHAPES[rng.integers(len(SHAPES))]
    names = list(COLOURS)
    colour = names[rng.integers(len(names))]
    background = [n for n in names if n != colour][rng.integers(len(names) - 1)]
    size_word = (None, "small", "large")[rng.choice(3, p=(0.5, 0.25, 0.25))]
    low, high = RADII[size_word]
    radius = float(rng.uniform(low, high))
    margin = radius + 1.0
    if rng.random() < 0.4 and radius < 19.0:
        place = list(PLACES)[rng.integers(len(PLACES))]
        fx, fy = PLACES[place]
        cx = float(np.clip(fx * SIZE + rng.uniform(-3, 3), margin, SIZE - margin))
        cy = float(np.clip(fy * SIZE + rng.uniform(-3, 3), margin, SIZE - margin))
    else:
        place = None
        cx, cy = (float(rng.uniform(margin, SIZE - margin)) for _ in range(2))
    # Most captions name the background: the semantic tests ask for it, and CFG needs the contrast.
    said_background = background if rng.random() < 0.85 else None
    caption = caption_for(shape, colour, said_background, size_word, place)
    return ShapeSample(shape, colour, background, size_word, place, (cx, cy), radius, caption)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        angles = [-np.pi / 2 + k * 2 * np.pi / 3 for k in range(3)]
        return [(cx + r * np.cos(a), cy + r * np.sin(a) + r * 0.15) for a in angles]
    # star: five points, inner radius 0.45 of the outer
    points = []
    for k in range(10):
        a = -np.pi / 2 + k * np.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        points.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
    return points


def render(sample: ShapeSample) -> np.ndarray:
    """The sample's image as ``uint8 [64, 64, 3]``."""
    big = SIZE * _SUPER
    image = Image.new("RGB", (big, big), COLOURS[sample.background])
    draw = ImageDraw.Draw(image)
    fill = COLOURS[sample.colour]
    cx, cy, r = (v * _SUPER for v in (*sample.centre, sample.radius))
    if sample.shape in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        if sample.shape == "ring":
            inner = r * 0.55
            draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=COLOURS[sample.background])
    else:
        draw.polygon(_polygon(sample.shape, cx, cy, r), fill=fill)
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.uint8)


def make_batch(seed: int, start: int, count: int) -> tuple[np.ndarray, list[ShapeSample]]:
    """Samples ``start .. start + count - 1``: images ``uint8 [count, 64, 64, 3]`` and their descriptions."""
    samples = [describe(seed, i) for i in range(start, start + count)]
    return np.stack([render(s) for s in samples]), samples


def nearest_colour(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """The name in :data:`COLOURS` nearest to an RGB triple (0-255)."""
    value = np.asarray(rgb, dtype=np.float64)
    return min(COLOURS, key=lambda name: float(np.sum((value - np.asarray(COLOURS[name])) ** 2)))


def dominant_rgb(
    image: np.ndarray, border: int = 3, min_distance: float = 60.0,
) -> tuple[np.ndarray | None, np.ndarray]:
    """(foreground, background) RGB of a ``uint8 [H, W, 3]`` image, as float arrays.

    The background is the median of a ``border``-pixel frame; the foreground the median
    of the pixels farther than ``min_distance`` (RGB) from it, None when there are fewer
    than 1% such pixels (nothing drawn).
    """
    pixels = image.astype(np.float64)
    frame = np.concatenate([
        pixels[:border].reshape(-1, 3), pixels[-border:].reshape(-1, 3),
        pixels[:, :border].reshape(-1, 3), pixels[:, -border:].reshape(-1, 3),
    ])
    bg = np.median(frame, axis=0)
    flat = pixels.reshape(-1, 3)
    far = flat[np.linalg.norm(flat - bg, axis=1) > min_distance]
    if len(far) < 0.01 * len(flat):
        return None, bg
    return np.median(far, axis=0), bg


def dominant_colours(image: np.ndarray, border: int = 3, min_distance: float = 60.0) -> tuple[str, str]:
    """(foreground, background) colour names of a ``uint8 [H, W, 3]`` image (:func:`dominant_rgb`, each named by
    :func:`nearest_colour`); the foreground is ``"none"`` when nothing is drawn."""
    fg, bg = dominant_rgb(image, border, min_distance)
    return ("none" if fg is None else nearest_colour(fg)), nearest_colour(bg)
