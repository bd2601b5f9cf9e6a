"""IMAGE and MASK tensors to and from files.

IMAGE is ``[B, H, W, C]`` float32 in 0..1 and MASK ``[B, H, W]`` (or ``[H, W]``) float32, as in ComfyUI
(PROTOCOL.md 9.7). PNGs are written with ``tEXt`` chunks (``prompt``, then one per ``extra_pnginfo`` key)
so the editor and ComfyUI can load the workflow back from the picture.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from diffusion.files import atomic_path


def to_pil(image: torch.Tensor) -> Image.Image:
    """One ``[H, W, C]`` image in 0..1 to an 8-bit PIL image (values truncated as ComfyUI does)."""
    array = np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def from_pil(image: Image.Image) -> torch.Tensor:
    """A PIL image to a ``[1, H, W, 3]`` float tensor in 0..1."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


def png_text(prompt: Mapping[str, Any] | None, extra_pnginfo: Mapping[str, Any] | None) -> PngInfo:
    """The PNG text chunks ComfyUI writes: ``prompt`` first, then each ``extra_pnginfo`` key, JSON encoded."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def save_png(image: torch.Tensor, path: Path, text: PngInfo | None = None, compress_level: int = 4) -> None:
    """Write one ``[H, W, C]`` image atomically (:func:`diffusion.files.atomic_path`): a half-written file never
    appears under ``path``, nor under any other ``*.png`` name."""
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format="PNG", pnginfo=text, compress_level=compress_level)


def load_image(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an image file as ``(IMAGE [N, H, W, 3], MASK [N, H, W])`` like ComfyUI's LoadImage.

    EXIF orientation is applied; every frame of a multi-frame file of one size becomes a batch entry; the mask is
    ``1 - alpha`` (so painted-out areas are 1), or zeros of 64x64 when the image has no alpha.
    """
    with Image.open(path) as opened:
        images, masks = [], []
        size = None
        for frame in ImageSequence.Iterator(opened):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            images.append(from_pil(rgb))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha)[None])
            else:
                masks.append(torch.zeros((1, 64, 64), dtype=torch.float32))
    mask_shapes = {tuple(m.shape) for m in masks}
    mask = torch.cat(masks) if len(mask_shapes) == 1 else masks[0]
    return torch.cat(images), mask
