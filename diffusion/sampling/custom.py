"""The NOISE and SAMPLER values of ComfyUI's custom-sampling nodes.

A NOISE value makes the initial noise of a LATENT (:class:`RandomNoise`, :class:`DisableNoise`);
a SAMPLER value is one sampler algorithm with its options (:class:`SamplerChoice`,
ComfyUI's ``KSAMPLER``). Both are immutable, so they cache and compare like any other
node output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from diffusion.sampling.noise import prepare_noise
from diffusion.sampling.sample import DenoiseFn, sample
from diffusion.sampling.samplers import StepCallback, get_sampler
from diffusion.sampling.schedule import DiscreteSchedule


@dataclass(frozen=True)
class RandomNoise:
    """Seeded Gaussian noise, drawn as KSampler draws it (``batch_index`` respected)."""

    seed: int

    def generate_noise(self, latent: Mapping[str, Any]) -> torch.Tensor:
        """The noise for ``latent["samples"]``, on the CPU."""
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class DisableNoise:
    """No initial noise (zeros): for latents that are already noisy. Its seed is 0."""

    seed: int = 0

    def generate_noise(self, latent: Mapping[str, Any]) -> torch.Tensor:
        """Zeros shaped like ``latent["samples"]``, on the CPU."""
        samples: torch.Tensor = latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu")


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler by ComfyUI name plus keyword options for its function (eta, s_noise, order, ...).

    ``function`` overrides the named sampler's function (samplers that only a node offers,
    such as SamplerLCMUpscale's); the name then still picks the per-step noise.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    function: Callable[..., torch.Tensor] | None = None

    def __post_init__(self) -> None:
        get_sampler(self.name)  # an unknown name fails here, at the node that chose it

    def sample(self, denoiser: DenoiseFn, noise: torch.Tensor, latent: torch.Tensor, sigmas: torch.Tensor, seed: int,
               callback: StepCallback | None = None, denoise_mask: torch.Tensor | None = None,
               schedule: DiscreteSchedule | None = None,
               model_options: dict[str, Any] | None = None) -> torch.Tensor:
        """Run :func:`diffusion.sampling.sample` with this sampler (model space in and out)."""
        return sample(denoiser, noise, latent, sigmas, self.name, seed, callback=callback, denoise_mask=denoise_mask,
                      schedule=schedule, sampler_options=dict(self.options), model_options=model_options,
                      function=self.function)
