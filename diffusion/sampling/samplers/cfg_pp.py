"""CFG++ samplers (arXiv 2406.08070): they step along the *negative* prediction's direction.

The model call still returns the guided prediction; a post-CFG hook
(:func:`~diffusion.sampling.samplers.base.capture_uncond`) keeps the negative one, and the
cfg-1 shortcut is switched off so that it exists at every cfg. The denoised target of a
step is the guided prediction, the slope back to noise the negative one's, so CFG++ at a
low cfg (about 1 to 2) behaves like plain CFG at a higher one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import (
    Denoiser,
    StepCallback,
    ancestral_step,
    capture_uncond,
    report,
    require_noise,
    to_d,
)


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    """``sigma * exp(half log-SNR)``: 1 for an eps model, computed so for ComfyUI's rounding."""
    return sigma * sigma.log().neg().exp()


def sample_euler_ancestral_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral with the CFG++ step: ``x = alpha*denoised + sigma_down * d_uncond`` plus fresh noise."""
    extra_args, capture = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s, alpha_t = _alpha(sigmas[i]), _alpha(sigmas[i + 1])
        d = to_d(x, sigmas[i], alpha_s * capture.uncond)
        sigma_down, sigma_up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * denoised + (alpha_t * sigma_down) * d
        if eta > 0 and s_noise > 0:
            noise = require_noise(noise_sampler, "euler_ancestral_cfg_pp")(sigmas[i], sigmas[i + 1])
            x = x + alpha_t * noise * s_noise * sigma_up
    return x


def sample_euler_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Euler with the CFG++ step (the ancestral form at eta 0, no noise)."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args, callback, noise_sampler, eta=0.0, s_noise=0.0)


def sample_euler_cfg_pp_alternative(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """SamplerEulerCFG++'s "alternative" version: Euler on the slope of ``x - denoised + uncond``."""
    extra_args, capture = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x - denoised + capture.uncond, sigmas[i], denoised)
        report(callback, i, x, denoised, sigmas[i])
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def sample_dpmpp_2s_ancestral_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral with CFG++: both sub-steps start from ``x`` shifted by a guidance difference."""
    extra_args, capture = capture_uncond(extra_args)
    noise_sampler = require_noise(noise_sampler, "dpmpp_2s_ancestral_cfg_pp")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond = capture.uncond
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, denoised, sigmas[i])
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            h = t_next - t
            s = t + h / 2
            x_2 = ((-s).exp() / (-t).exp()) * (x + (denoised - uncond)) - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, (-s).exp() * s_in, **extra_args)
            # ComfyUI shifts by the negative prediction of the sub-step here, not the step's.
            x = ((-t_next).exp() / (-t).exp()) * (x + (denoised - capture.uncond)) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_2m_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) with the CFG++ step: the multistep correction uses the previous negative prediction."""
    extra_args, capture = capture_uncond(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_uncond: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond = capture.uncond
        report(callback, i, x, denoised, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_uncond is None or sigmas[i + 1] == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x
