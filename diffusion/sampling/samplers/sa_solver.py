"""SA-Solver (arXiv 2309.05019): stochastic Adams predictor-corrector in data prediction.

A predictor of up to 3 past predictions and a corrector of up to 4, weighted by the
integrals of their Lagrange polynomials against the SDE's exponential kernel. Noise is
injected (``tau = 1``) while sigma lies between the model's sigmas at 20% and 80% of the
schedule, as ComfyUI's default does; outside it the solver is an ODE one. The PECE
variant evaluates the model again on each corrected state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import Denoiser, StepCallback, report, require_noise
from diffusion.sampling.schedule import DiscreteSchedule


def exponential_coefficients(s: torch.Tensor, t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """``(1 + tau^2) * int_s^t exp((1 + tau^2) x) x^p dx / exp((1 + tau^2) t)`` for p = 0..order-1.

    Integration by parts gives a lower-triangular recursion, built as a matrix.
    """
    tau_mul = 1 + tau**2
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    boundary = t**p - s**p * (-tau_mul * (t - s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_coeff = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        log_coeff = log_coeff - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_coeff.exp() * signs).tril() @ boundary


def adams_weights(sigma_next: torch.Tensor, lambdas: torch.Tensor, lambda_s: torch.Tensor, lambda_t: torch.Tensor,
                  tau: float, simple_order_2: bool = False, corrector: bool = False) -> torch.Tensor:
    """The weights of the predictions at ``lambdas`` for a step from ``lambda_s`` to ``lambda_t``.

    ``simple_order_2``: two-point steps use the paper's simplified weights (its appendix D).
    """
    if simple_order_2 and lambdas.shape[0] == 2:
        return _simple_order_2_weights(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector)
    integrals = exponential_coefficients(lambda_s, lambda_t, lambdas.shape[0], tau)
    vandermonde_t = torch.vander(lambdas, lambdas.shape[0], increasing=True).T
    alpha_t = sigma_next * lambda_t.exp()
    return alpha_t * torch.linalg.solve(vandermonde_t, integrals)


def _simple_order_2_weights(sigma_next: torch.Tensor, lambdas: torch.Tensor, lambda_s: torch.Tensor,
                            lambda_t: torch.Tensor, tau: float, corrector: bool) -> torch.Tensor:
    """SA-Solver's simplified order-2 predictor (two steps) or corrector (one step) weights."""
    tau_mul = 1 + tau**2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    full = alpha_t * (-h * tau_mul).expm1().neg()
    if corrector:
        newest = alpha_t * (0.5 * tau_mul * h)
        return torch.stack([full - newest, newest])
    older = alpha_t * (0.5 * tau_mul * h**2) / (lambdas[-2] - lambda_s)
    return torch.stack([older, full - older])


def tau_window(schedule: DiscreteSchedule, start: float = 0.2, end: float = 0.8,
               eta: float = 1.0) -> Callable[[torch.Tensor], float]:
    """``tau(sigma)``: ``eta`` for sigmas between the schedule's at ``start`` and ``end`` percent, else 0."""
    high, low = schedule.percent_to_sigma(start), schedule.percent_to_sigma(end)

    def tau(sigma: torch.Tensor) -> float:
        return eta if eta > 0 and high >= float(sigma) >= low else 0.0

    return tau


def _combine(predictions: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * predictions[k]`` over the stacked predictions."""
    return torch.tensordot(torch.stack(predictions, dim=1), weights, dims=([1], [0]))


def sample_sa_solver(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, s_noise: float = 1.0,
    predictor_order: int = 3, corrector_order: int = 4, use_pece: bool = False,
    tau_func: Callable[[torch.Tensor], float] | None = None, schedule: DiscreteSchedule | None = None,
    simple_order_2: bool = False,
) -> torch.Tensor:
    """SA-Solver; ``tau_func`` defaults to :func:`tau_window` on ``schedule`` (the model's)."""
    if len(sigmas) <= 1:
        return x
    extra_args = extra_args or {}
    noise_sampler = require_noise(noise_sampler, "sa_solver")
    tau_func = tau_func or tau_window(schedule or DiscreteSchedule())
    s_in = x.new_ones([x.shape[0]])
    lambdas = -sigmas.log()
    max_order = max(predictor_order, corrector_order)
    lower_order_to_end = float(sigmas[-1]) == 0
    x_pred = x
    h: Any = 0.0
    tau = 0.0
    noise: Any = 0.0
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * s_in, **extra_args)
        report(callback, i, x_pred, denoised, sigmas[i])
        history = [*history, denoised][-max_order:]
        n_predict = min(predictor_order, len(history))
        n_correct = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(history))
        if lower_order_to_end:
            n_predict = min(n_predict, len(sigmas) - 2 - i)
            n_correct = min(n_correct, len(sigmas) - 1 - i)

        if n_correct == 0:
            x = x_pred
        else:
            weights = adams_weights(sigmas[i], lambdas[i - n_correct + 1:i + 1], lambdas[i - 1], lambdas[i], tau,
                                    simple_order_2, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau**2) * h).exp() * x + _combine(history[-n_correct:], weights)
            if tau > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model(x, sigmas[i] * s_in, **extra_args)
                history[-1] = denoised

        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        weights = adams_weights(sigmas[i + 1], lambdas[i - n_predict + 1:i + 1], lambdas[i], lambdas[i + 1], tau,
                                simple_order_2)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau**2) * h).exp() * x + _combine(history[-n_predict:], weights)
        if tau > 0 and s_noise > 0:
            noise = (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                     * (-2 * tau**2 * h).expm1().neg().sqrt() * s_noise)
            x_pred = x_pred + noise
    return x_pred


def sample_sa_solver_pece(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, s_noise: float = 1.0,
    predictor_order: int = 3, corrector_order: int = 4, tau_func: Callable[[torch.Tensor], float] | None = None,
    schedule: DiscreteSchedule | None = None, simple_order_2: bool = False,
) -> torch.Tensor:
    """SA-Solver in PECE mode (predict, evaluate, correct, evaluate): two model calls per step."""
    return sample_sa_solver(model, x, sigmas, extra_args, callback, noise_sampler, s_noise, predictor_order,
                            corrector_order, True, tau_func, schedule, simple_order_2)
