"""Sigma schedules and sigma-list tools of ComfyUI's custom-sampling nodes.

The KSampler schedulers live in :mod:`diffusion.sampling.schedulers`; these are the
extra ones the scheduler nodes offer (polyexponential, Laplace, VP, SD-Turbo, Align Your
Steps) and the SIGMAS transformations (split, flip, set first, extend). Sigmas are 1-D
float32 CPU tensors, highest first, usually ending in 0.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from diffusion.sampling.schedule import DiscreteSchedule

#: Align Your Steps' 10-step noise levels per model family (NVIDIA's published values).
AYS_NOISE_LEVELS: dict[str, tuple[float, ...]] = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}

Spacing = Literal["linear", "cosine", "sine"]


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def polyexponential_schedule(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """Polynomial (power ``rho``) in log sigma from sigma_max to sigma_min; append 0."""
    ramp = torch.linspace(1, 0, steps) ** rho
    sigmas = torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    return _append_zero(sigmas)


def laplace_schedule(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0,
                     beta: float = 0.5) -> torch.Tensor:
    """Log sigma spaced by the Laplace quantile function (Tiankai et al. 2024), clamped to the range; append 0."""
    x = torch.linspace(0, 1, steps)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    sigmas = torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max)
    return _append_zero(sigmas)


def vp_schedule(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous VP-SDE schedule, uniform in t from 1 to ``eps_s``; append 0."""
    t = torch.linspace(1, eps_s, steps)
    sigmas = torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t))
    return _append_zero(sigmas)


def sd_turbo_schedule(schedule: DiscreteSchedule, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """SD-Turbo's timesteps 999, 899, ... 99 (``steps`` of them, skipping the first ``10 - 10*denoise``); append 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
    return _append_zero(schedule.sigma(timesteps))


def loglinear_interp(levels: tuple[float, ...] | list[float], count: int) -> np.ndarray:
    """``count`` values through decreasing ``levels``, interpolated linearly in log space."""
    xs = np.linspace(0, 1, len(levels))
    ys = np.log(np.asarray(levels)[::-1])
    interp = np.interp(np.linspace(0, 1, count), xs, ys)
    return np.exp(interp)[::-1].copy()


def align_your_steps_schedule(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """Align Your Steps' schedule for ``model_type`` (SD1, SDXL, SVD); empty when ``denoise`` <= 0."""
    if model_type not in AYS_NOISE_LEVELS:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {', '.join(AYS_NOISE_LEVELS)}")
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    levels: list[float] | np.ndarray = list(AYS_NOISE_LEVELS[model_type])
    if steps + 1 != len(levels):
        levels = loglinear_interp(AYS_NOISE_LEVELS[model_type], steps + 1)
    levels = levels[-(total + 1):]
    levels[-1] = 0
    return torch.FloatTensor(levels)


def split_sigmas(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigmas[:step + 1], sigmas[step:])``: the two share the sigma at ``step``."""
    return sigmas[:step + 1], sigmas[step:]


def split_sigmas_denoise(sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split so that the low part holds ``round(steps * denoise)`` steps (ComfyUI's slicing, 0 included)."""
    steps = max(sigmas.shape[-1] - 1, 0)
    total = round(steps * denoise)
    return sigmas[:-total], sigmas[-(total + 1):]


def flip_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """The schedule reversed (for inversion); a leading 0 becomes 0.0001."""
    if len(sigmas) == 0:
        return sigmas
    sigmas = sigmas.flip(0)
    if sigmas[0] == 0:
        sigmas[0] = 0.0001
    return sigmas


def set_first_sigma(sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    """A copy with the first sigma replaced."""
    sigmas = sigmas.clone()
    if len(sigmas) > 0:
        sigmas[0] = sigma
    return sigmas


def extend_intermediate_sigmas(sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                               spacing: Spacing = "linear") -> torch.Tensor:
    """Insert ``steps - 1`` sigmas into each interval that starts within [end_at_sigma, start_at_sigma].

    A negative ``start_at_sigma`` means no upper limit. ``spacing`` shapes where they fall.
    """
    if start_at_sigma < 0:
        start_at_sigma = float("inf")
    shapes = {"linear": lambda t: t, "cosine": lambda t: torch.sin(t * math.pi / 2),
              "sine": lambda t: 1 - torch.cos(t * math.pi / 2)}
    if spacing not in shapes:
        raise ValueError(f"unknown spacing {spacing!r}; expected linear, cosine or sine")
    fractions = shapes[spacing](torch.linspace(0, 1, steps + 1)[1:-1])
    extended: list[float] = []
    for i in range(len(sigmas) - 1):
        current, following = sigmas[i], sigmas[i + 1]
        extended.append(float(current))
        if end_at_sigma <= current <= start_at_sigma:
            extended.extend((fractions * (following - current) + current).tolist())
    if len(sigmas) > 0:
        extended.append(float(sigmas[-1]))
    return torch.FloatTensor(extended)


def basic_scheduler_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """BasicScheduler's sigmas: like KSampler's (``int(steps / denoise)`` steps, the last ``steps + 1`` kept)
    but without KSampler's penultimate-sigma rule for dpm_2/uni_pc."""
    from diffusion.sampling.schedulers import calculate_sigmas

    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = int(steps / denoise)
    return calculate_sigmas(schedule, scheduler, total).cpu()[-(steps + 1):]
