"""Writing a batch of images as one animated PNG or WebP, with ComfyUI's metadata, atomically.

Animated PNGs carry the prompt and workflow in ``comf`` chunks after the image data
(``key\\0json``), where ComfyUI puts them; animated WebPs carry them in EXIF tags,
``prompt:json`` in 0x0110 (Model) and each other key counting down from 0x010F (Make).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from diffusion.files import atomic_path
from diffusion.images import to_pil

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _frames(images: torch.Tensor) -> list[Image.Image]:
    if images.shape[0] == 0:
        raise ValueError("there are no images to save")
    return [to_pil(image) for image in images]


def _frame_ms(fps: float) -> int:
    if fps <= 0:
        raise ValueError(f"fps must be above 0, got {fps}")
    return int(1000.0 / fps)


def save_animated_png(images: torch.Tensor, path: Path, fps: float, compress_level: int,
                      prompt: Mapping[str, Any] | None, extra_pnginfo: Mapping[str, Any] | None) -> None:
    """Write ``[B, H, W, C]`` as an APNG of B frames at ``fps``."""
    frames = _frames(images)
    info = PngInfo()
    entries = ([("prompt", prompt)] if prompt is not None else []) + list((extra_pnginfo or {}).items())
    for key, value in entries:
        info.add(b"comf", key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1"), after_idat=True)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                       duration=_frame_ms(fps), append_images=frames[1:])


def save_animated_webp(images: torch.Tensor, path: Path, fps: float, lossless: bool, quality: int, method: str,
                       prompt: Mapping[str, Any] | None, extra_pnginfo: Mapping[str, Any] | None) -> None:
    """Write ``[B, H, W, C]`` as an animated WebP of B frames; ``method`` is a key of :data:`WEBP_METHODS`."""
    if method not in WEBP_METHODS:
        raise ValueError(f"unknown WebP method {method!r}; expected one of {', '.join(WEBP_METHODS)}")
    frames = _frames(images)
    exif = frames[0].getexif()
    if prompt is not None:
        exif[0x0110] = f"prompt:{json.dumps(prompt)}"
    for offset, (key, value) in enumerate((extra_pnginfo or {}).items()):
        exif[0x010F - offset] = f"{key}:{json.dumps(value)}"
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="WEBP", save_all=True, duration=_frame_ms(fps), append_images=frames[1:],
                       exif=exif, lossless=lossless, quality=quality, method=WEBP_METHODS[method])
