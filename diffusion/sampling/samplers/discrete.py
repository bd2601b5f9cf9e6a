"""Samplers that re-noise from a fresh draw each step: DDPM (ancestral, in VP form) and LCM."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import Denoiser, StepCallback, report, require_noise


def _ddpm_step(
    x: torch.Tensor, sigma: torch.Tensor, sigma_prev: torch.Tensor, eps: torch.Tensor, noise_sampler: NoiseSampler
) -> torch.Tensor:
    """One DDPM posterior step on the VP-scaled latent ``x`` given the predicted noise ``eps``."""
    alpha_cumprod = 1 / ((sigma * sigma) + 1)
    alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
    alpha = alpha_cumprod / alpha_cumprod_prev
    mu = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
    if sigma_prev > 0:
        variance = (1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)
        mu = mu + variance.sqrt() * noise_sampler(sigma, sigma_prev)
    return mu


def sample_ddpm(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling: the state is moved to VP scale for the step and back."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "ddpm")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        eps = (x - denoised) / sigmas[i]
        x = _ddpm_step(x / torch.sqrt(1.0 + sigmas[i] ** 2.0), sigmas[i], sigmas[i + 1], eps, noise_sampler)
        if sigmas[i + 1] != 0:
            x = x * torch.sqrt(1.0 + sigmas[i + 1] ** 2.0)
    return x


def sample_lcm(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Latent Consistency sampling: jump to the prediction, then noise it afresh to the next sigma."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "lcm")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


def sample_lcm_upscale(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, total_upscale: float = 2.0,
    upscale_method: str = "bislerp", upscale_steps: int | None = None,
) -> torch.Tensor:
    """LCM that enlarges the latent after each of its first steps, up to ``total_upscale`` times the size.

    ``upscale_steps`` (default: half the steps) says over how many steps; the fresh noise
    is drawn from torch's global generator (seeded by the initial noise), as ComfyUI does,
    because the latent's size changes.
    """
    from diffusion.resize import upscale

    extra_args = extra_args or {}
    count = max(len(sigmas) // 2 + 1, 2) if upscale_steps is None else min(upscale_steps + 1, len(sigmas) + 1)
    factors = np.linspace(1.0, total_upscale, count)[1:]
    height, width = x.shape[-2], x.shape[-1]
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        x = denoised
        if i < len(factors):
            x = upscale(x, round(width * factors[i]), round(height * factors[i]), upscale_method)
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * torch.randn_like(x)
    return x
