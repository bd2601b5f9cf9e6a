"""The nine sigma schedules of ComfyUI's ``KSampler`` and how the node slices them.

Each schedule returns a float32 tensor of sigmas, usually ``steps + 1`` long and ending
in 0 (PROTOCOL.md 9.3; ``ddim_uniform`` and ``beta`` may return a different count).
The arithmetic follows ComfyUI's: where it goes through Python floats or float32
tensors matters for the last bits, and those bits reach the images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.stats
import torch

from diffusion.sampling.schedule import DiscreteSchedule

#: ComfyUI's ``SCHEDULER_NAMES``, in its order (the combo default is the first).
SCHEDULER_NAMES: tuple[str, ...] = (
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
)

#: Samplers whose schedule is computed for one step more, then loses its second-to-last sigma.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def simple_schedule(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Evenly strided entries of the table from the top (``sigmas[-(1 + int(i * 1000 / steps))]``)."""
    stride = len(schedule.sigmas) / steps
    sigmas = [float(schedule.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.FloatTensor([*sigmas, 0.0])


def ddim_uniform_schedule(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Table entries 1, 1+k, 1+2k, ... (k = 1000 // steps) reversed, after a 0; never starts at sigma_max."""
    first = 1
    if math.isclose(float(schedule.sigmas[first]), 0, abs_tol=0.00001):
        steps += 1
        sigmas: list[float] = []
    else:
        sigmas = [0.0]
    stride = max(len(schedule.sigmas) // steps, 1)
    sigmas += [float(schedule.sigmas[t]) for t in range(first, len(schedule.sigmas), stride)]
    return torch.FloatTensor(sigmas[::-1])


def normal_schedule(schedule: DiscreteSchedule, steps: int, sgm: bool = False) -> torch.Tensor:
    """Sigmas at timesteps spaced linearly from t(sigma_max) to t(sigma_min); ``sgm`` drops the last point."""
    start = schedule.timestep(schedule.sigma_max)
    end = schedule.timestep(schedule.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(schedule.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigmas = [float(schedule.sigma(t)) for t in timesteps]
    if append_zero:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas)


def sgm_uniform_schedule(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """``normal`` with ``steps + 1`` timesteps of which the last is dropped (SGM's uniform spacing)."""
    return normal_schedule(schedule, steps, sgm=True)


def beta_schedule(schedule: DiscreteSchedule, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(0.6, 0.6) distribution; repeated timesteps are skipped."""
    total = len(schedule.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * total)
    sigmas: list[float] = []
    last = -1.0
    for t in timesteps:
        if t != last:
            sigmas.append(float(schedule.sigmas[int(t)]))
        last = t
    return torch.FloatTensor([*sigmas, 0.0])


def linear_quadratic_schedule(
    schedule: DiscreteSchedule, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Mochi's schedule: linear then quadratic in ``1 - sigma/sigma_max``, scaled by sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
        fractions = [1.0 - f for f in [*linear, *quadratic, 1.0]]
    return torch.FloatTensor(fractions) * schedule.sigma_max


def karras_schedule(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): interpolate linearly in ``sigma^(1/rho)``; append 0."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def exponential_schedule(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Sigmas evenly spaced in log from sigma_max to sigma_min; append 0."""
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp()
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def kl_optimal_schedule(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in ``atan(sigma)`` (Align Your Steps' KL-optimal schedule); the last entry is 0.

    One step gives NaN (a division by ``steps - 1 = 0``), as in ComfyUI.
    """
    fractions = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = fractions.new_zeros(steps + 1)
    sigmas[:-1] = (fractions * math.atan(sigma_min) + (1 - fractions) * math.atan(sigma_max)).tan_()
    return sigmas


ScheduleFn = Callable[[DiscreteSchedule, int], torch.Tensor]
_FROM_TABLE: dict[str, ScheduleFn] = {
    "simple": simple_schedule,
    "sgm_uniform": sgm_uniform_schedule,
    "ddim_uniform": ddim_uniform_schedule,
    "beta": beta_schedule,
    "normal": normal_schedule,
    "linear_quadratic": linear_quadratic_schedule,
}
_FROM_RANGE: dict[str, Callable[[int, float, float], torch.Tensor]] = {
    "karras": karras_schedule,
    "exponential": exponential_schedule,
    "kl_optimal": kl_optimal_schedule,
}


def calculate_sigmas(schedule: DiscreteSchedule, name: str, steps: int) -> torch.Tensor:
    """The sigmas of scheduler ``name`` for ``steps`` steps (float32, CPU).

    ``karras``, ``exponential`` and ``kl_optimal`` only see the model's sigma range as
    Python floats; the others read the model's table.
    """
    if name in _FROM_TABLE:
        return _FROM_TABLE[name](schedule, steps)
    if name in _FROM_RANGE:
        return _FROM_RANGE[name](steps, float(schedule.sigma_min), float(schedule.sigma_max))
    raise ValueError(f"unknown scheduler {name!r}; expected one of {', '.join(SCHEDULER_NAMES)}")


def ksampler_sigmas(
    schedule: DiscreteSchedule, scheduler: str, sampler: str, steps: int, denoise: float | None = 1.0
) -> torch.Tensor:
    """The sigmas a ``KSampler`` node computes (``KSampler.set_steps``): denoise and discard rules applied.

    ``denoise`` <= 0 gives an empty tensor (sampling then returns the latent unchanged);
    below 0.9999 the schedule is computed for ``int(steps / denoise)`` steps and its last
    ``steps + 1`` sigmas are kept.
    """
    if denoise is None or denoise > 0.9999:
        return _sampler_schedule(schedule, scheduler, sampler, steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    sigmas = _sampler_schedule(schedule, scheduler, sampler, int(steps / denoise))
    return sigmas[-(steps + 1) :]


def _sampler_schedule(schedule: DiscreteSchedule, scheduler: str, sampler: str, steps: int) -> torch.Tensor:
    """``calculate_sigmas``, with one extra step dropped again for the discard-penultimate samplers."""
    if sampler not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        return calculate_sigmas(schedule, scheduler, steps)
    sigmas = calculate_sigmas(schedule, scheduler, steps + 1)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def slice_sigmas(
    sigmas: torch.Tensor, start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False
) -> torch.Tensor | None:
    """KSamplerAdvanced's step window over ``sigmas``; ``None`` when nothing is left to sample.

    ``last_step`` cuts after that step (its sigma becomes 0 with ``force_full_denoise``),
    then ``start_step`` skips the first steps. ComfyUI writes that 0 into the caller's
    tensor through a view; we copy instead, and return the same values.
    """
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step < len(sigmas) - 1:
            sigmas = sigmas[start_step:]
        else:
            return None
    return sigmas
