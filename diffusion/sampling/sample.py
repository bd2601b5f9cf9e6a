"""Run one sampler over a schedule, from noise to latent (ComfyUI's ``KSAMPLER.sample``).

The ``denoiser`` contract, for whoever wraps the UNet (the integration layer)::

    denoiser(x, sigma) -> denoised

``x`` is the noisy latent in *model space* (VAE latent times the scale factor) at noise
level ``sigma``, a float32 tensor of shape ``[B]`` (one sigma per batch item, all equal
here). The result is the predicted clean latent, same shape as ``x``, with CFG already
applied. A denoiser that takes a ``model_options`` keyword gets the run's options (the
MODEL's, plus what a cfg++ sampler adds: a post-CFG hook that reads the negative
prediction, and ``disable_cfg1_optimization``) and must honour them as
:func:`diffusion.sampling.cfg.guide` does; one that does not take it cannot run the cfg++
samplers. For the UNet: for an eps model ``DiscreteSchedule.scale_input`` gives the UNet's input,
``DiscreteSchedule.timestep(sigma)`` its timestep, ``calculate_denoised`` turns its
output into ``denoised``, and :func:`diffusion.sampling.cfg.cfg_combine` mixes the
positive and negative predictions (skip the negative one when
:func:`~diffusion.sampling.cfg.skips_uncond`). It must not keep state between calls:
samplers call it at sigmas of their choosing (between schedule entries too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffusion.sampling.noise import BrownianTreeNoiseSampler, NoiseSampler, default_noise_sampler
from diffusion.sampling.samplers import SamplerEntry, StepCallback, get_sampler
from diffusion.sampling.schedule import DiscreteSchedule

#: ``denoiser(x, sigma)`` or ``denoiser(x, sigma, model_options=...)`` -> denoised (see the module docstring).
DenoiseFn = Callable[..., torch.Tensor]


def sample(
    denoiser: DenoiseFn,
    noise: torch.Tensor,
    latent: torch.Tensor,
    sigmas: torch.Tensor,
    sampler_name: str,
    seed: int,
    callback: StepCallback | None = None,
    denoise_mask: torch.Tensor | None = None,
    schedule: DiscreteSchedule | None = None,
    sampler_options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    function: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sample ``latent`` (model space) along ``sigmas`` with ComfyUI's sampler ``sampler_name``.

    ``noise`` is the initial noise (:func:`~diffusion.sampling.noise.prepare_noise`, or
    zeros for KSamplerAdvanced's ``add_noise = disable``); it is scaled to ``sigmas[0]``
    (by ``sqrt(1 + sigma^2)`` when the schedule starts at the model's sigma_max) and added
    to the latent. ``seed`` seeds the per-step noise of stochastic samplers. With
    ``denoise_mask`` (1 = regenerate, 0 = keep, broadcastable to the latent) the kept
    parts are re-noised to each step's sigma before the model sees them and restored
    after it (KSamplerX0Inpaint). Empty ``sigmas`` return the latent unchanged.
    ``callback`` gets ``{"i", "denoised", "x", "sigma", "sigma_hat"}`` each step; an
    exception it raises (an interruption) propagates. ``model_options`` (ComfyUI's) reach the
    denoiser on every call; ``sampler_options`` are the sampler's own keyword arguments
    (eta, s_noise, ...); ``function`` replaces the sampler's own function (same contract).
    Returns the final latent in model space.
    """
    if sigmas.shape[-1] == 0:
        return latent
    entry = get_sampler(sampler_name)
    schedule = schedule or DiscreteSchedule()
    sigmas = sigmas.to(noise.device)
    model = _as_model(denoiser, latent, noise, denoise_mask, entry, seed, sigmas, schedule)
    x = schedule.noise_scaling(sigmas[0], noise, latent, schedule.is_max_denoise(sigmas))
    noise_sampler = _noise_sampler(entry, x, sigmas, seed)
    options = dict(sampler_options or {})
    if entry.wants_schedule:
        options.setdefault("schedule", schedule)
    extra_args = {"model_options": dict(model_options or {})}
    run = function or entry.function
    return run(model, x, sigmas, extra_args, callback, noise_sampler, **options)


def prepare_denoise_mask(noise_mask: torch.Tensor, latent_shape: Sequence[int]) -> torch.Tensor:
    """A LATENT's ``noise_mask`` ([H, W], [B, H, W] or [B, 1, H, W], image or latent size) as a denoise mask.

    Resized bilinearly to the latent's spatial size, repeated over channels and cycled
    over the batch, as ComfyUI prepares it before sampling.
    """
    batch, channels, *spatial = latent_shape
    mask = noise_mask.reshape((-1, 1, noise_mask.shape[-2], noise_mask.shape[-1])).float()
    mask = torch.nn.functional.interpolate(mask, size=tuple(spatial), mode="bilinear")
    if mask.shape[1] < channels:
        mask = mask.repeat((1, channels, 1, 1))[:, :channels]
    if mask.shape[0] < batch:
        mask = mask.repeat([math.ceil(batch / mask.shape[0]), 1, 1, 1])
    return mask[:batch]


def _noise_sampler(entry: SamplerEntry, x: torch.Tensor, sigmas: torch.Tensor, seed: int) -> NoiseSampler | None:
    """The per-step noise a sampler needs, seeded from ``seed``."""
    if entry.noise == "default":
        return default_noise_sampler(x, seed=seed)
    if entry.noise in ("brownian", "brownian_device"):
        positive = sigmas[sigmas > 0]
        if positive.numel() == 0:
            return None
        return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seed, cpu=entry.noise == "brownian")
    return None


def _as_model(
    denoiser: DenoiseFn, latent: torch.Tensor, noise: torch.Tensor, denoise_mask: torch.Tensor | None,
    entry: SamplerEntry, seed: int, sigmas: torch.Tensor, schedule: DiscreteSchedule,
) -> Callable[..., torch.Tensor]:
    """The sampler's ``model(x, sigma, **extra_args)``: the denoiser, with inpaint blending when masked.

    A ``denoise_mask_function`` in the call's options (DifferentialDiffusion) gets
    ``(sigma, mask, {"sigmas", "schedule", "model"})`` and returns the mask of that step.
    """

    def call(x: torch.Tensor, sigma: torch.Tensor, model_options: dict[str, Any] | None = None) -> torch.Tensor:
        if model_options:
            return denoiser(x, sigma, model_options=model_options)  # type: ignore[call-arg]
        return denoiser(x, sigma)

    if denoise_mask is None:
        return lambda x, sigma, model_options=None, **_: call(x, sigma, model_options)

    inpaint_noise = noise
    if entry.random_inpaint_noise:
        generator = torch.manual_seed(seed + 1)
        inpaint_noise = torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)
    mask = denoise_mask.to(latent.device, latent.dtype)
    keep = 1.0 - mask

    def model(x: torch.Tensor, sigma: torch.Tensor, model_options: dict[str, Any] | None = None,
              **_: Any) -> torch.Tensor:
        step_mask, step_keep = mask, keep
        mask_function = (model_options or {}).get("denoise_mask_function")
        if mask_function is not None:
            step_mask = mask_function(sigma, mask, {"sigmas": sigmas, "schedule": schedule, "model": None})
            step_keep = 1.0 - step_mask
        sigma_b = sigma.reshape([sigma.shape[0]] + [1] * (noise.ndim - 1))
        x = x * step_mask + (inpaint_noise * sigma_b + latent) * step_keep
        return call(x, sigma, model_options) * step_mask + latent * step_keep

    return model
