"""Single-step ODE samplers and their ancestral twins: Euler, Heun, Heun++ and DPM-2.

Karras et al.'s "churn" (s_churn) is not offered: ComfyUI's KSampler never sets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import (
    Denoiser,
    StepCallback,
    add_ancestral_noise,
    ancestral_step,
    capture_uncond,
    report,
    require_noise,
    to_d,
)


def sample_euler(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE: one model call per step."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        report(callback, i, x, denoised, sigmas[i])
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def sample_euler_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler down to ``sigma_down``, then fresh noise back up to the next sigma."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "euler_ancestral")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, denoised, sigmas[i])
        if sigma_down == 0:
            x = denoised
            continue
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        x = add_ancestral_noise(x, noise_sampler, sigmas[i], sigmas[i + 1], sigma_up, s_noise)
    return x


def sample_heun(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, algorithm 1); the step to 0 is plain Euler."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        report(callback, i, x, denoised, sigmas[i])
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
        d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
        x = x + (d + d_2) / 2 * dt
    return x


def sample_heunpp2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Heun++: slopes at up to three points, weighted by their sigma relative to the first sigma.

    The last step is Euler, the one before it two-point Heun with sigma weights.
    """
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        report(callback, i, x, denoised, sigmas[i])
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
        d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
        if sigmas[i + 2] == s_end:
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
        denoised_3 = model(x_3, sigmas[i + 2] * s_in, **extra_args)
        d_3 = to_d(x_3, sigmas[i + 2], denoised_3)
        w = 3 * sigmas[0]
        w2, w3 = sigmas[i + 1] / w, sigmas[i + 2] / w
        x = x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt
    return x


def sample_dpm_2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver-2 in Karras' form: the slope at the log-midpoint sigma drives the full step."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        x = _midpoint_step(model, x, d, sigmas[i], sigmas[i + 1], s_in, extra_args)
    return x


def sample_dpm_2_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-2 down to ``sigma_down``, then fresh noise back up to the next sigma."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "dpm_2_ancestral")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, denoised, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
            continue
        x = _midpoint_step(model, x, d, sigmas[i], sigma_down, s_in, extra_args)
        x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _midpoint_step(
    model: Denoiser, x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
    s_in: torch.Tensor, extra_args: Mapping[str, Any],
) -> torch.Tensor:
    """One DPM-2 step from ``sigma`` to ``sigma_next`` given the slope ``d`` at ``sigma``."""
    sigma_mid = sigma.log().lerp(sigma_next.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
    d_2 = to_d(x_2, sigma_mid, denoised_2)
    return x + d_2 * (sigma_next - sigma)


def sample_gradient_estimation(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, ge_gamma: float = 2.0,
    cfg_pp: bool = False,
) -> torch.Tensor:
    """Euler with the slope extrapolated from the previous one, ``gamma*d + (1-gamma)*d_old`` (arXiv o2ND9v0CeK).

    With ``cfg_pp`` the slope comes from the negative prediction and the step starts from the
    guided one (CFG++).
    """
    capture = None
    if cfg_pp:
        extra_args, capture = capture_uncond(extra_args)
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_d: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], capture.uncond if capture is not None else denoised)
        report(callback, i, x, denoised, sigmas[i])
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if capture is not None else x + d * dt
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def sample_gradient_estimation_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, ge_gamma: float = 2.0,
) -> torch.Tensor:
    """Gradient estimation with the CFG++ step."""
    return sample_gradient_estimation(model, x, sigmas, extra_args, callback, noise_sampler, ge_gamma, cfg_pp=True)
