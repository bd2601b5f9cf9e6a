"""Stochastic DPM-Solver++ samplers: 2S ancestral, SDE, 2M SDE (midpoint and Heun) and 3M SDE.

They work in ``lambda = -log(sigma)`` (half the log-SNR of an eps model). The SDE
variants take their noise from a Brownian tree, so sub-step noise is consistent
with the step's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import (
    Denoiser,
    StepCallback,
    add_ancestral_noise,
    ancestral_step,
    report,
    require_noise,
    to_d,
)


def sample_dpmpp_2s_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2S) down to ``sigma_down`` (one extra call at the log-midpoint), then fresh noise."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "dpmpp_2s_ancestral")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, denoised, sigmas[i])
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = -sigmas[i].log(), -sigma_down.log()
            h = t_next - t
            s = t + h / 2
            x_2 = ((-s).exp() / (-t).exp()) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, (-s).exp() * s_in, **extra_args)
            x = ((-t_next).exp() / (-t).exp()) * x - (-h).expm1() * denoised_2
        x = add_ancestral_noise(x, noise_sampler, sigmas[i], sigmas[i + 1], sigma_up, s_noise)
    return x


def sample_dpmpp_sde(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0, r: float = 1 / 2,
) -> torch.Tensor:
    """DPM-Solver++ (stochastic, 2 model calls per step): an ancestral sub-step to ``lambda + r*h``, then the step."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "dpmpp_sde")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = -sigmas[i].log(), -sigmas[i + 1].log()
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        fac = 1 / (2 * r)
        sigma_s_1 = (-lambda_s_1).exp()
        # alpha = sigma * exp(lambda) is 1 for an eps model, kept in the formula for its rounding.
        alpha_s = sigmas[i] * lambda_s.exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = -sd.log() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)

        sd, su = ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = -sd.log() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def sample_dpmpp_2m_sde(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0, solver_type: Literal["midpoint", "heun"] = "midpoint",
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the multistep correction of 2M plus injected noise, one call per step."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "dpmpp_2m_sde")
    s_in = x.new_ones([x.shape[0]])
    old_denoised: torch.Tensor | None = None
    h_last: torch.Tensor | None = None
    h: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x, h, h_eta, alpha_t = _sde_first_order_step(x, denoised, sigmas[i], sigmas[i + 1], eta)
            if old_denoised is not None and h_last is not None:
                r = h_last / h
                if solver_type == "heun":
                    phi = (-h_eta).expm1().neg() / (-h_eta) + 1
                    x = x + alpha_t * phi * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            x = _add_sde_noise(x, noise_sampler, sigmas[i], sigmas[i + 1], h, eta, s_noise)
        old_denoised = denoised
        h_last = h
    return x


def sample_dpmpp_2m_sde_heun(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE with the Heun form of the second-order correction."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, "heun")


def sample_dpmpp_3m_sde(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third order from the two previous denoised predictions, plus noise."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "dpmpp_3m_sde")
    s_in = x.new_ones([x.shape[0]])
    denoised_1: torch.Tensor | None = None
    denoised_2: torch.Tensor | None = None
    h: torch.Tensor | None = None
    h_1: torch.Tensor | None = None
    h_2: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x, h, h_eta, alpha_t = _sde_first_order_step(x, denoised, sigmas[i], sigmas[i + 1], eta)
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None and h_1 is not None and denoised_1 is not None and denoised_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None and denoised_1 is not None:
                d = (denoised - denoised_1) / (h_1 / h)
                x = x + (alpha_t * phi_2) * d
            x = _add_sde_noise(x, noise_sampler, sigmas[i], sigmas[i + 1], h, eta, s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _sde_first_order_step(
    x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first-order (data prediction) SDE step of the multistep samplers: ``(x, h, h_eta, alpha_t)``.

    ``h`` is the step in lambda, ``h_eta = h * (eta + 1)`` and ``alpha_t`` the next alpha, which
    the higher-order corrections reuse.
    """
    lambda_s, lambda_t = -sigma.log(), -sigma_next.log()
    h = lambda_t - lambda_s
    h_eta = h * (eta + 1)
    alpha_t = sigma_next * lambda_t.exp()
    x = sigma_next / sigma * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
    return x, h, h_eta, alpha_t


def _add_sde_noise(
    x: torch.Tensor, noise_sampler: NoiseSampler, sigma: torch.Tensor, sigma_next: torch.Tensor, h: torch.Tensor,
    eta: float, s_noise: float,
) -> torch.Tensor:
    """The noise the multistep SDE samplers inject after a step of size ``h`` (none when eta or s_noise is 0)."""
    if eta > 0 and s_noise > 0:
        noise = noise_sampler(sigma, sigma_next)
        x = x + noise * sigma_next * (-2 * h * eta).expm1().neg().sqrt() * s_noise
    return x
