"""Resizing latents and images, with the method names ComfyUI's nodes offer.

All functions take channels-first ``[B, C, H, W]`` tensors; callers move IMAGE's channel axis.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")


def center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop the middle of ``samples`` to the aspect ratio of ``width`` x ``height``."""
    old_h, old_w = samples.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples[..., y : old_h - y, x : old_w - x]


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), keeping the interpolated norm linear."""
    norm_a, norm_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    unit_a, unit_b = a / norm_a.clamp_min(1e-8), b / norm_b.clamp_min(1e-8)
    dot = (unit_a * unit_b).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    linear = sin_omega.abs() < 1e-4  # nearly parallel: plain lerp of the directions is exact enough
    wa = torch.where(linear, 1 - t, torch.sin((1 - t) * omega) / sin_omega.where(~linear, torch.ones_like(sin_omega)))
    wb = torch.where(linear, t, torch.sin(t * omega) / sin_omega.where(~linear, torch.ones_like(sin_omega)))
    direction = wa * unit_a + wb * unit_b
    return direction * ((1 - t) * norm_a + t * norm_b)


def _bislerp_axis(samples: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    old = samples.shape[dim]
    pos = (torch.arange(size, dtype=torch.float64) + 0.5) * old / size - 0.5
    pos = pos.clamp(0, old - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=old - 1)
    t = (pos - lo).to(samples.dtype)
    a, b = samples.index_select(dim, lo), samples.index_select(dim, hi)
    shape = [1] * samples.ndim
    shape[dim] = size
    return _slerp(a, b, t.view(shape))


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize by spherical interpolation of the channel vectors along each axis (latent-friendly)."""
    out = _bislerp_axis(samples.float(), width, 3)
    return _bislerp_axis(out, height, 2).to(samples.dtype)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    frames = []
    for image in samples.movedim(1, -1).float().cpu().numpy():
        pil = Image.fromarray(np.clip(255.0 * image, 0, 255).astype(np.uint8).squeeze())
        resized = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        frames.append(torch.from_numpy(resized.reshape(height, width, -1)))
    return torch.stack(frames).movedim(-1, 1).to(samples.device, samples.dtype)


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``height`` x ``width`` with one of UPSCALE_METHODS/IMAGE_UPSCALE_METHODS."""
    if crop == "center":
        samples = center_crop_to_aspect(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    if method == "nearest-exact":
        return F.interpolate(samples, size=(height, width), mode="nearest-exact")
    if method in ("bilinear", "bicubic"):
        return F.interpolate(samples, size=(height, width), mode=method, align_corners=False)
    if method == "area":
        return F.interpolate(samples, size=(height, width), mode="area")
    raise ValueError(f"unknown upscale method {method!r}")


def fit_image(image: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """An IMAGE ``[B, H, W, C]`` brought to ``size`` = (height, width): ``stretch``, ``crop`` (centre, after
    scaling to cover) or ``pad`` (scaled to fit, centred on black)."""
    height, width = size
    pixels = image.movedim(-1, 1)
    if method == "stretch":
        out = torch.nn.functional.interpolate(pixels, size=(height, width), mode="bilinear", align_corners=False)
    elif method in ("crop", "pad"):
        h, w = pixels.shape[-2:]
        ratio = max(height / h, width / w) if method == "crop" else min(height / h, width / w)
        new_h, new_w = max(1, round(h * ratio)), max(1, round(w * ratio))
        scaled = torch.nn.functional.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
        if method == "crop":
            top, left = (new_h - height) // 2, (new_w - width) // 2
            out = scaled[..., top:top + height, left:left + width]
        else:
            out = pixels.new_zeros(pixels.shape[0], pixels.shape[1], height, width)
            top, left = (height - new_h) // 2, (width - new_w) // 2
            out[..., top:top + new_h, left:left + new_w] = scaled
    else:
        raise ValueError(f"unknown resize method {method!r}; expected stretch, crop or pad")
    return out.movedim(1, -1).clamp(0.0, 1.0)
