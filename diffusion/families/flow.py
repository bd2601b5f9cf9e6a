"""Flow-matching model sampling (SD3, Flux, AuraFlow), as ComfyUI's ``ModelSamplingDiscreteFlow`` and
``ModelSamplingFlux`` with the ``CONST`` model type.

A flow model sees ``x_sigma = (1 - sigma) * x0 + sigma * noise`` for sigma in (0, 1] and
predicts the velocity ``v = noise - x0``; the denoised latent is ``x - sigma * v``. Its
sigma table is the shifted time grid ``t = i / N``:

- SD3 / AuraFlow: ``sigma(t) = shift * t / (1 + (shift - 1) * t)``, N = 1000, and the model
  is fed ``sigma * multiplier`` (1000 for SD3, 1 for AuraFlow);
- Flux: ``sigma(t) = e^mu / (e^mu + 1/t - 1)`` with ``mu = shift``, N = 10000, fed sigma itself.

The schedule objects have the surface of ``diffusion.sampling.schedule.DiscreteSchedule``
(``sigmas``, ``sigma``, ``timestep``, ...), so the schedulers in
``diffusion.sampling.schedulers`` (``simple``, ``beta``, ``sgm_uniform``, ...) run on them
unchanged. Arithmetic follows ComfyUI's order in float32 so tables match bit for bit.
"""

from __future__ import annotations

import math

import torch

from diffusion.sampling.schedule import broadcast_sigma


def time_snr_shift(shift: float, t: torch.Tensor | float) -> torch.Tensor | float:
    """SD3's time shift: ``shift * t / (1 + (shift - 1) * t)`` (the identity for shift 1)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu: float, t: torch.Tensor | float, power: float = 1.0) -> torch.Tensor | float:
    """Flux's time shift: ``e^mu / (e^mu + (1/t - 1)^power)``."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** power)


def flux_shift_for_size(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """``ModelSamplingFlux``'s shift for an image size: linear in the token count, base at 256, max at 4096."""
    slope = (max_shift - base_shift) / (4096 - 256)
    intercept = base_shift - slope * 256
    return (width * height / (8 * 8 * 2 * 2)) * slope + intercept


class FlowSchedule:
    """A flow-matching sigma table and the ``CONST`` model maths around it.

    ``kind`` is ``"discrete_flow"`` (SD3, AuraFlow: ``shift`` and ``multiplier``) or
    ``"flux"`` (``shift`` is Flux's mu; the timestep is sigma itself).
    """

    prediction = "flow"

    def __init__(self, kind: str = "discrete_flow", shift: float = 3.0, multiplier: float = 1000.0) -> None:
        if kind not in ("discrete_flow", "flux"):
            raise ValueError(f"unknown flow schedule {kind!r}; expected discrete_flow or flux")
        self.kind = kind
        self.shift = float(shift)
        self.multiplier = 1.0 if kind == "flux" else float(multiplier)
        steps = 10000 if kind == "flux" else 1000
        t = torch.arange(1, steps + 1, 1) / steps
        self.sigmas = self.sigma(t if kind == "flux" else t * self.multiplier)

    def __repr__(self) -> str:
        return f"FlowSchedule({self.kind!r}, shift={self.shift}, multiplier={self.multiplier})"

    @property
    def sigma_min(self) -> torch.Tensor:
        """The smallest sigma of the table (t = 1/N)."""
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        """The largest sigma of the table (1.0)."""
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """What the model is fed as its timestep at ``sigma``."""
        return sigma * self.multiplier

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a model timestep (the inverse of :meth:`timestep`)."""
        if self.kind == "flux":
            return flux_time_shift(self.shift, timestep)  # type: ignore[return-value]
        return time_snr_shift(self.shift, timestep / self.multiplier)  # type: ignore[return-value]

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the denoising process (0 = start: 1.0, 1 = end: 0.0)."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        if self.kind == "flux":
            return float(flux_time_shift(self.shift, 1.0 - percent))
        return float(time_snr_shift(self.shift, 1.0 - percent))

    # --- the model call in sigma space (ComfyUI's CONST) ----------------------------------------

    @staticmethod
    def scale_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """A flow model takes the noisy latent as it is."""
        return x

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor,
                           prediction: str | None = None) -> torch.Tensor:
        """The denoised latent from the predicted velocity: ``x - sigma * v``."""
        return x - model_output * broadcast_sigma(sigma, x.ndim)

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        """True when a schedule starts at (or above) sigma_max."""
        first, top = float(sigmas[0]), float(self.sigma_max)
        return math.isclose(top, first, rel_tol=1e-05) or first > top

    @staticmethod
    def noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """The starting point at ``sigma``: ``sigma * noise + (1 - sigma) * latent``."""
        sigma = broadcast_sigma(torch.as_tensor(sigma), noise.ndim)
        return sigma * noise + (1.0 - sigma) * latent

    @staticmethod
    def inverse_noise_scaling(sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Undo the ``1 - sigma`` factor on the latent (a no-op at the end, sigma 0)."""
        return latent / (1.0 - broadcast_sigma(torch.as_tensor(sigma), latent.ndim))


def sd3_schedule(shift: float = 3.0, multiplier: float = 1000.0) -> FlowSchedule:
    """SD3's schedule (``ModelSamplingSD3``; AuraFlow is multiplier 1, default shift 1.73)."""
    return FlowSchedule("discrete_flow", shift, multiplier)


def flux_schedule(shift: float = 1.15) -> FlowSchedule:
    """Flux's schedule (``ModelSamplingFlux``; dev's default shift 1.15, schnell's 1.0)."""
    return FlowSchedule("flux", shift)
