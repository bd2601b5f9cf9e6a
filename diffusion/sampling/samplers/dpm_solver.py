"""DPM-Solver (Lu et al. 2022) in its fixed-budget (``dpm_fast``) and adaptive (``dpm_adaptive``) forms.

Both ignore the inside of the schedule, as ComfyUI's do: they integrate from
``sigmas[0]`` down to the smallest nonzero sigma (they never reach 0). ``dpm_fast``
spends ``len(sigmas) - 1`` model calls; ``dpm_adaptive`` picks its own steps with a PID
step-size controller. Both work on the noise prediction ``eps`` in ``t = -log(sigma)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import Denoiser, StepCallback, ancestral_step, require_noise


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


class _Solver:
    """The eps model in ``t`` with a per-step cache, and the 1st/2nd/3rd order single steps."""

    def __init__(self, model: Denoiser, extra_args: Mapping[str, Any]) -> None:
        self.model = model
        self.extra_args = extra_args
        self.cache: dict[str, torch.Tensor] = {}

    def eps(self, key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps at (x, t), computed once per step and key."""
        if key not in self.cache:
            sigma = _sigma(t) * x.new_ones([x.shape[0]])
            self.cache[key] = (x - self.model(x, sigma, **self.extra_args)) / _sigma(t)
        return self.cache[key]

    def step_1(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """First order (DDIM)."""
        h = t_next - t
        return x - _sigma(t_next) * h.expm1() * self.eps("eps", x, t)

    def step_2(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, r1: float = 1 / 2) -> torch.Tensor:
        """Second order, one intermediate evaluation at ``t + r1*h``."""
        h = t_next - t
        eps = self.eps("eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps("eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """Third order, evaluations at ``t + h/3`` and ``t + 2h/3``."""
        r1, r2 = 1 / 3, 2 / 3
        h = t_next - t
        eps = self.eps("eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps("eps_r1", u1, s1)
        u2 = (
            x
            - _sigma(s2) * (r2 * h).expm1() * eps
            - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2 = self.eps("eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def _range(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_start, t_end) from sigmas[0] to the last nonzero sigma."""
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    return _t(sigmas[0].clone()), _t(sigma_min.clone())


def sample_dpm_fast(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, eta: float = 0.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-fast: steps of order 3 (then 2, 1) uniform in t, using exactly ``len(sigmas) - 1`` calls."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = require_noise(noise_sampler, "dpm_fast")
    t_start, t_end = _range(sigmas)
    nfe = len(sigmas) - 1
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = _Solver(model, extra_args or {})
    for i, order in enumerate(orders):
        solver.cache = {}
        t, t_next = ts[i], ts[i + 1]
        su: Any = 0.0
        t_next_ = t_next
        if eta:
            sd, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
            t_next_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5
        eps = solver.eps("eps", x, t)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": _sigma(t), "sigma_hat": _sigma(t), "denoised": x - _sigma(t) * eps})
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[order]
        x = step(x, t, t_next_)
        x = x + su * s_noise * noise_sampler(_sigma(t), _sigma(t_next))
    return x


class _PIDStepSize:
    """PID control of the step size from the error estimate (integral control by default)."""

    def __init__(
        self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float,
        eps: float = 1e-8,
    ) -> None:
        self.h: Any = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: torch.Tensor) -> bool:
        """Rescale h from the error; True when the step just tried is accepted."""
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


def sample_dpm_adaptive(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, order: int = 3,
    rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, pcoeff: float = 0.0, icoeff: float = 1.0,
    dcoeff: float = 0.0, accept_safety: float = 0.81, eta: float = 0.0, s_noise: float = 1.0,
) -> torch.Tensor:
    """Adaptive DPM-Solver: embedded order 2/3 (or 1/2) pairs estimate the error; the callback sees every try."""
    if len(sigmas) <= 1:
        return x
    noise_sampler = require_noise(noise_sampler, "dpm_adaptive")
    if order not in {2, 3}:
        raise ValueError("order should be 2 or 3")
    t_start, t_end = _range(sigmas)
    forward = bool(t_end > t_start)
    if not forward and eta:
        raise ValueError("eta must be 0 for reverse sampling")
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    solver = _Solver(model, extra_args or {})
    pid = _PIDStepSize(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff, 1.5 if eta else order,
                       accept_safety)
    s = t_start
    x_prev = x
    steps = 0
    while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
        solver.cache = {}
        t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
        su: Any = 0.0
        t_ = t
        if eta:
            sd, _ = ancestral_step(_sigma(s), _sigma(t), eta)
            t_ = torch.minimum(t_end, _t(sd))
            su = (_sigma(t) ** 2 - _sigma(t_) ** 2) ** 0.5
        eps = solver.eps("eps", x, s)
        denoised = x - _sigma(s) * eps
        if order == 2:
            x_low, x_high = solver.step_1(x, s, t_), solver.step_2(x, s, t_)
        else:
            x_low, x_high = solver.step_2(x, s, t_, r1=1 / 3), solver.step_3(x, s, t_)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + su * s_noise * noise_sampler(_sigma(s), _sigma(t))
            s = t
        steps += 1
        if callback is not None:
            callback({"x": x, "i": steps - 1, "sigma": _sigma(s), "sigma_hat": _sigma(s), "denoised": denoised})
    return x
