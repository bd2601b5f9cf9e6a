"""Continuous noise schedules (ComfyUI's ModelSamplingContinuousEDM and ModelSamplingContinuousV).

The model is trained on a continuous sigma range rather than a 1000-step table. A table
of 1000 log-spaced sigmas between ``sigma_min`` and ``sigma_max`` still serves the
schedulers that read one; the UNet's timestep is ``0.25 * log(sigma)`` (EDM) or
``atan(sigma) * 2 / pi`` (V). The prediction (eps, v or EDM's skip/output mix) uses
``sigma_data``: 0.5 for ``edm``, else 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from diffusion.sampling.schedule import DiscreteSchedule, broadcast_sigma

Kind = Literal["edm", "v"]


class ContinuousSchedule(DiscreteSchedule):
    """A continuous sigma range, with its prediction (``eps``, ``v`` or ``edm``) and ``sigma_data``."""

    def __init__(self, sigma_min: float, sigma_max: float, kind: Kind = "edm", prediction: str = "eps",
                 sigma_data: float = 1.0) -> None:
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must be above 0 and below sigma_max ({sigma_max})")
        self.kind = kind
        self.prediction = prediction  # type: ignore[assignment]
        self.zsnr = False
        self.sigma_data = float(sigma_data)
        self.range = (float(sigma_min), float(sigma_max))
        self.sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The UNet's (continuous) timestep for ``sigma``."""
        sigma = torch.as_tensor(sigma).float()
        return 0.25 * sigma.log() if self.kind == "edm" else sigma.atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """The sigma of a (continuous) timestep."""
        t = torch.as_tensor(timestep).float()
        return (t / 0.25).exp() if self.kind == "edm" else (t * math.pi / 2).tan()

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the run: log-linear from sigma_max (0) to sigma_min (1)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        low, high = (math.log(v) for v in self.range)
        return math.exp((high - low) * (1.0 - percent) + low)

    def scale_input(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``x / sqrt(sigma^2 + sigma_data^2)``."""
        sigma = broadcast_sigma(sigma, x.ndim)
        return x / (sigma**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor,
                           prediction: str | None = None) -> torch.Tensor:  # type: ignore[override]
        """The denoised latent from the UNet's output (eps, v, or EDM's ``c_skip x + c_out F``)."""
        prediction = prediction or self.prediction
        s = broadcast_sigma(sigma, x.ndim)
        d2 = self.sigma_data**2
        if prediction == "eps":
            return x - model_output * s
        if prediction in ("v", "edm"):
            sign = 1.0 if prediction == "edm" else -1.0
            return x * d2 / (s**2 + d2) + sign * model_output * s * self.sigma_data / (s**2 + d2) ** 0.5
        raise ValueError(f"unknown prediction type {prediction!r}")
