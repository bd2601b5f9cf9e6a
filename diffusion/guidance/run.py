"""Sampling a LATENT with a guider, a noise, a sampler and sigmas (ComfyUI's SamplerCustomAdvanced).

The steps are exactly KSampler's (:func:`diffusion.ksampler.run_sampler`): noise drawn on
the CPU and moved, the latent into model space, the guider's denoiser, the sampler, back
to an unscaled LATENT on the CPU. So CFGGuider + RandomNoise + KSamplerSelect +
BasicScheduler gives KSampler's latent bit for bit (apart from KSampler's extra step for
the discard-penultimate samplers, which BasicScheduler does not make, as in ComfyUI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

from diffusion.guidance.guiders import Guider, require_model
from diffusion.sampling import prepare_denoise_mask, process_latent_in, process_latent_out
from diffusion.sampling.custom import SamplerChoice

#: ``callback(step, total, denoised)`` as :data:`diffusion.ksampler.ProgressCallback`.
ProgressCallback = Callable[[int, int, torch.Tensor], None]


class NoiseSource(Protocol):
    """A NOISE value: its seed (for per-step noise) and the initial noise of a LATENT."""

    seed: int

    def generate_noise(self, latent: Mapping[str, Any]) -> torch.Tensor:
        """The initial noise for ``latent["samples"]``."""
        ...


def sample_with_guider(guider: Guider, noise: NoiseSource, sampler: SamplerChoice, sigmas: torch.Tensor,
                       latent: Mapping[str, Any],
                       callback: ProgressCallback | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(output, denoised_output)`` LATENTs: the sampled latent and the last step's denoised prediction.

    Empty ``sigmas`` return the input latent unchanged (both outputs), as ComfyUI does; the
    outputs keep the input's other keys (``noise_mask``, ``batch_index``...).
    """
    model = require_model(guider.model)
    samples: torch.Tensor = latent["samples"]
    out = dict(latent)
    if sigmas.shape[-1] == 0:
        out["samples"] = samples
        return out, out
    device = model.device
    initial = noise.generate_noise(latent).to(device)
    x0 = process_latent_in(samples.to(device).float(), model.latent_scale)
    denoise_mask = None
    if latent.get("noise_mask") is not None:
        denoise_mask = prepare_denoise_mask(latent["noise_mask"].to(device), x0.shape)
    denoiser = guider.denoiser(tuple(x0.shape), latent_image=x0, denoise_mask=denoise_mask)
    total = sigmas.shape[-1] - 1
    last: dict[str, torch.Tensor] = {}

    def step_callback(info: dict[str, Any]) -> None:
        last["x0"] = info["denoised"]
        if callback is not None:
            callback(int(info["i"]), total, info["denoised"])

    with torch.no_grad():
        result = sampler.sample(denoiser, initial, x0, sigmas.to(device), noise.seed, callback=step_callback,
                                denoise_mask=denoise_mask, schedule=model.schedule, model_options=model.options)
    out["samples"] = process_latent_out(result.float(), model.latent_scale).cpu()
    if "x0" not in last:
        return out, out
    denoised = dict(latent)
    denoised["samples"] = process_latent_out(last["x0"].float().cpu(), model.latent_scale)
    return out, denoised
