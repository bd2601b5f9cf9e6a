"""Sampler previews: the step's denoised latent as a small RGB image ("latent2rgb").

Each latent channel contributes a fixed RGB colour (ComfyUI's per-family factors, plus a
bias for SDXL); the result, at latent resolution, is what the editor shows while a
sampler runs. It costs one tiny matrix product per step, so it is our default.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

#: ComfyUI's ``latent_rgb_factors`` ([channel][r, g, b]) and bias per latent family.
LATENT_RGB: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float] | None]] = {
    "sd1": (((0.3512, 0.2297, 0.3227), (0.325, 0.4974, 0.235), (-0.2829, 0.1762, 0.2721),
             (-0.212, -0.2616, -0.7177)), None),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}
_FAMILY = {"sd1": "sd1", "sd2": "sd1", "sdxl": "sdxl", "sdxl_refiner": "sdxl"}

#: ``extra_data["preview_method"]`` values that give previews (taesd falls back to latent2rgb);
#: ``none`` turns them off. Absent or ``default`` means the server default: latent2rgb on.
PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "default")


def wants_preview(method: Any) -> bool:
    """True if the prompt's ``preview_method`` (None when absent) asks for sampler previews."""
    return method is None or str(method) in PREVIEW_METHODS


def latent_to_rgb(x0: torch.Tensor, arch: str) -> Image.Image:
    """The first latent of a batch ([B, 4, h, w], model space) as an ``h x w`` RGB image."""
    factors, bias = LATENT_RGB[_FAMILY.get(arch, "sd1")]
    latent = x0[0].float().cpu()
    weight = torch.tensor(factors, dtype=torch.float32).transpose(0, 1)  # [3, C]: rgb = latent . factors
    rgb = torch.nn.functional.linear(latent.movedim(0, -1), weight,
                                     torch.tensor(bias, dtype=torch.float32) if bias is not None else None)
    # Truncating to uint8, as ComfyUI does (no rounding).
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def preview_tuple(x0: torch.Tensor, arch: str) -> tuple[str, Image.Image, None]:
    """The executor's preview payload: ``("JPEG", image, None)`` (the server applies its preview size)."""
    return ("JPEG", latent_to_rgb(x0, arch), None)
