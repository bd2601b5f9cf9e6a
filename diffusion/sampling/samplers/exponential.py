"""Exponential-integrator samplers in ``lambda = -log(sigma)``: RES multistep, SEEDS-2/3 and ER-SDE.

All three take fresh noise from the default noise sampler (``res_multistep`` draws it
but, with eta 0, adds none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def _res_multistep(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None,
    callback: StepCallback | None, noise_sampler: NoiseSampler | None, eta: float, s_noise: float,
    cfg_pp: bool = False,
) -> torch.Tensor:
    """RES second-order multistep (arXiv 2308.02157), optionally ancestral (eta > 0) or CFG++."""
    capture = None
    if cfg_pp:
        extra_args, capture = capture_uncond(extra_args)
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "res_multistep")
    s_in = x.new_ones([x.shape[0]])
    old_denoised: torch.Tensor | None = None
    old_sigma_down: Any = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, denoised, sigmas[i])
        uncond = capture.uncond if capture is not None else None
        if (sigma_down == 0 or old_denoised is None) and uncond is not None:
            x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        elif sigma_down == 0 or old_denoised is None:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = (-s.log() for s in (sigmas[i], old_sigma_down, sigma_down, sigmas[i - 1]))
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            if uncond is not None:
                x = (-h).exp() * (x + (denoised - uncond)) + h * (b1 * uncond + b2 * old_denoised)
            else:
                x = (-h).exp() * x + h * (b1 * denoised + b2 * old_denoised)
        x = add_ancestral_noise(x, noise_sampler, sigmas[i], sigmas[i + 1], sigma_up, s_noise)
        old_denoised = uncond if uncond is not None else denoised
        old_sigma_down = sigma_down
    return x


def sample_res_multistep(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, s_noise: float = 1.0,
) -> torch.Tensor:
    """RES multistep, deterministic."""
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, 0.0, s_noise)


def sample_res_multistep_ancestral(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """RES multistep down to ``sigma_down``, then fresh noise back up to the next sigma."""
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)


def sample_res_multistep_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, s_noise: float = 1.0,
) -> torch.Tensor:
    """RES multistep with the CFG++ step, deterministic."""
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, 0.0, s_noise, cfg_pp=True)


def sample_res_multistep_ancestral_cfg_pp(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """RES multistep ancestral with the CFG++ step."""
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, cfg_pp=True)


def sample_seeds_2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0, r: float = 0.5,
) -> torch.Tensor:
    """SEEDS-2 (arXiv 2305.14267), VP data prediction: a noisy sub-step at ``lerp(lambda_s, lambda_t, r)``."""
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "seeds_2")
    s_in = x.new_ones([x.shape[0]])
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = -sigmas[i].log(), -sigmas[i + 1].log()
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = (-lambda_s_1).exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        inject_noise = eta > 0 and s_noise > 0
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * torch.expm1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)

        denoised_d = torch.lerp(denoised, denoised_2, fac)
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * torch.expm1(-h_eta) * denoised_d
        if inject_noise:
            # The step's noise continues the sub-step's (decayed), plus fresh noise for the rest of the interval.
            segment = (r - 1) * h * eta
            sde_noise = sde_noise * segment.exp()
            sde_noise = sde_noise + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def _er_sde_noise_scaler(x: torch.Tensor) -> torch.Tensor:
    """ER-SDE's default noise scale function of ``sigma / alpha``."""
    return x * ((x**0.3).exp() + 10.0)


def sample_er_sde(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, s_noise: float = 1.0,
    max_stage: int = 3, noise_scaler: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Extended reverse-time SDE solver (VP ER-SDE-Solver-3, arXiv 2309.06169).

    Stages 2 and 3 integrate the noise scale numerically over 200 points, as ComfyUI does.
    ``noise_scaler`` replaces ER-SDE's default noise scale function (SamplerER_SDE's
    reverse-time SDE uses ``x ** (eta + 1)``).
    """
    scaler = noise_scaler or _er_sde_noise_scaler
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "er_sde")
    s_in = x.new_ones([x.shape[0]])
    # sigma / alpha = exp(-half log-SNR); exp(log(sigma)) keeps ComfyUI's rounding.
    er_lambdas = sigmas.log().exp()
    points = 200.0
    point_index = torch.arange(0, points, dtype=torch.float32, device=x.device)
    old_denoised: torch.Tensor | None = None
    old_denoised_d: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
            old_denoised = denoised
            continue
        er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
        alpha_s = sigmas[i] / er_lambda_s
        alpha_t = sigmas[i + 1] / er_lambda_t
        r = scaler(er_lambda_t) / scaler(er_lambda_s)
        x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
        if stage >= 2 and old_denoised is not None:
            dt = er_lambda_t - er_lambda_s
            step = -dt / points
            positions = er_lambda_t + point_index * step
            scaled = scaler(positions)
            s = torch.sum(1 / scaled) * step
            denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
            x = x + alpha_t * (dt + s * scaler(er_lambda_t)) * denoised_d
            if stage >= 3 and old_denoised_d is not None:
                s_u = torch.sum((positions - er_lambda_s) / scaled) * step
                denoised_u = (denoised_d - old_denoised_d) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                x = x + alpha_t * ((dt**2) / 2 + s_u * scaler(er_lambda_t)) * denoised_u
            old_denoised_d = denoised_d
        if s_noise > 0:
            spread = (er_lambda_t**2 - er_lambda_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
            x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x


def _h_phi_1(h: torch.Tensor) -> torch.Tensor:
    """``h * phi_1(h)`` of exponential integrators."""
    return torch.expm1(h)


def _h_phi_2(h: torch.Tensor) -> torch.Tensor:
    """``h * phi_2(h)`` of exponential integrators."""
    return (torch.expm1(h) - h) / h


def sample_seeds_3(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 1.0,
    s_noise: float = 1.0, r_1: float = 1.0 / 3, r_2: float = 2.0 / 3,
) -> torch.Tensor:
    """SEEDS-3 (arXiv 2305.14267), VP data prediction: noisy sub-steps at ``r_1`` and ``r_2`` of the lambda step.

    Three model calls per step; the noise of each sub-step carries (decayed) into the next.
    """
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "seeds_3")
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        lambda_s, lambda_t = -sigma.log(), -sigma_next.log()
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = (-lambda_s_1).exp(), (-lambda_s_2).exp()
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_s_2 = sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigma_next * lambda_t.exp()

        x_2 = sigma_s_1 / sigma * (-r_1 * h * eta).exp() * x - alpha_s_1 * _h_phi_1(-r_1 * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigma, sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in, **extra_args)

        a3_2 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
        a3_1 = _h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigma * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject_noise:
            segment = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * segment.exp()
            sde_noise = sde_noise + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2 * s_in, **extra_args)

        b3 = _h_phi_2(-h_eta) / r_2
        b1 = _h_phi_1(-h_eta) - b3
        x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject_noise:
            segment = (r_2 - 1) * h * eta
            sde_noise = sde_noise * segment.exp()
            sde_noise = sde_noise + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_2, sigma_next)
            x = x + sde_noise * sigma_next * s_noise
    return x
