"""ComfyUI's ``comfy.sample``: noise and the sampling entry point."""

from __future__ import annotations

from typing import Any

import torch

from .. import missing, runtime
from ..values import unwrap

__getattr__ = missing("comfy.sample")


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Any = None) -> torch.Tensor:
    """ComfyUI's seeded noise for ``latent_image`` (same numbers as ComfyUI for the same seed)."""
    from diffusion.sampling.noise import prepare_noise as noise

    return noise(latent_image, seed, noise_inds)


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: Any, negative: Any, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
           force_full_denoise: bool = False, noise_mask: Any = None, callback: Any = None,
           disable_pbar: bool = False, seed: int | None = None) -> torch.Tensor:
    """Sample ``latent_image``; returns the samples tensor (progress to the running node).

    The noise is made from ``seed`` by our sampler (ComfyUI's numbers), so ``noise`` must be
    ComfyUI's seeded noise or zeros (``disable_noise``); other noise raises.
    """
    from diffusion.ksampler import ksample

    if seed is None:
        raise ValueError("noodlebox's comfy.sample.sample needs seed= (it makes ComfyUI's noise itself)")
    ctx = runtime.exec_ctx()

    def progress(step: int, total: int, denoised: Any) -> None:
        if callback is not None:
            callback(step, denoised, None, total)
        ctx.progress(step + 1, total, None)

    latent = {"samples": latent_image}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask
    out = ksample(unwrap(model), seed, steps, cfg, sampler_name, scheduler, unwrap(positive), unwrap(negative),
                  latent, denoise=denoise, add_noise=not disable_noise, start_step=start_step, last_step=last_step,
                  force_full_denoise=force_full_denoise, callback=progress)
    return out["samples"]
