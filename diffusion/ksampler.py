"""The common path of ComfyUI's KSampler and KSamplerAdvanced nodes (``common_ksampler``).

Noise from the seed (always drawn on the CPU, then moved), the node's sigmas (denoise,
start/end steps), the latent into model space, the sampler with the UNet wrapped by
:class:`~diffusion.denoiser.Denoiser`, and back out as an unscaled LATENT on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from diffusion.denoiser import Denoiser
from diffusion.models import UNetModel
from diffusion.sampling import (
    ksampler_sigmas,
    prepare_denoise_mask,
    prepare_noise,
    process_latent_in,
    process_latent_out,
    sample,
    slice_sigmas,
)

#: ``callback(step, total, denoised)``: ``step`` counts from 0, ``total`` is the number of steps run,
#: ``denoised`` the step's prediction in model space. An exception it raises stops sampling.
ProgressCallback = Callable[[int, int, torch.Tensor], None]


def ksample(
    model: UNetModel,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Sequence[Sequence[Any]],
    negative: Sequence[Sequence[Any]],
    latent: Mapping[str, Any],
    denoise: float = 1.0,
    add_noise: bool = True,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
    callback: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Sample a LATENT as ComfyUI's KSampler nodes do; returns a new LATENT dict.

    The result keeps the input's other keys (``batch_index``, ``noise_mask``...), as
    ComfyUI's ``latent.copy()`` does. When nothing is left to sample (denoise 0, or a
    start step past the end) the input samples come back unchanged.
    """
    samples: torch.Tensor = latent["samples"]
    if add_noise:
        noise = prepare_noise(samples, seed, latent.get("batch_index"))
    else:
        noise = torch.zeros(samples.size(), dtype=samples.dtype, layout=samples.layout, device="cpu")
    sigmas = ksampler_sigmas(model.schedule, scheduler, sampler_name, steps, denoise)
    window = slice_sigmas(sigmas, start_step, last_step, force_full_denoise)
    out = dict(latent)
    if window is None or window.shape[-1] == 0:
        out["samples"] = samples
        return out
    out["samples"] = run_sampler(model, noise, samples, window, sampler_name, seed, cfg, positive, negative,
                                 latent.get("noise_mask"), callback)
    return out


def run_sampler(
    model: UNetModel,
    noise: torch.Tensor,
    samples: torch.Tensor,
    sigmas: torch.Tensor,
    sampler_name: str,
    seed: int,
    cfg: float,
    positive: Sequence[Sequence[Any]],
    negative: Sequence[Sequence[Any]],
    noise_mask: torch.Tensor | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Sample along ``sigmas`` (non-empty) from an unscaled latent; returns the unscaled result on the CPU."""
    device = model.device
    noise = noise.to(device)
    latent = samples.to(device).float()
    shift = getattr(model, "latent_shift", 0.0)  # SD3/Flux latents are shifted, then scaled
    latent = process_latent_in(latent - shift if shift and latent.any() else latent, model.latent_scale)
    denoise_mask = None
    if noise_mask is not None:
        denoise_mask = prepare_denoise_mask(noise_mask.to(device), latent.shape)
    denoiser = Denoiser(model, positive, negative, cfg, tuple(latent.shape), latent_image=latent,
                        denoise_mask=denoise_mask, seed=seed)
    total = sigmas.shape[-1] - 1
    step_callback = None
    if callback is not None:
        def step_callback(info: dict[str, Any]) -> None:
            callback(int(info["i"]), total, info["denoised"])
    with torch.no_grad():
        result = sample(denoiser, noise, latent, sigmas.to(device), sampler_name, seed, callback=step_callback,
                        denoise_mask=denoise_mask, schedule=model.schedule, model_options=model.options)
    return (process_latent_out(result.float(), model.latent_scale) + shift).cpu()
