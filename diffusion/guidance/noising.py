"""Adding a NOISE to a LATENT at a schedule's noise level (ComfyUI's AddNoise)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffusion.guidance.run import NoiseSource
from diffusion.models import UNetModel
from diffusion.sampling import process_latent_in, process_latent_out


def add_noise(model: UNetModel, noise: NoiseSource, sigmas: torch.Tensor, latent: Mapping[str, Any]) -> dict[str, Any]:
    """``latent + noise * |sigmas[0] - sigmas[-1]|`` in model space (``sigmas[0]`` for a single sigma).

    Empty sigmas give the latent back; NaN and infinities become 0, as in ComfyUI.
    """
    if len(sigmas) == 0:
        return dict(latent)
    scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
    x = process_latent_in(latent["samples"].float(), model.latent_scale)
    noisy = model.schedule.noise_scaling(scale, noise.generate_noise(latent), x)
    noisy = process_latent_out(noisy, model.latent_scale)
    return {**latent, "samples": torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)}
