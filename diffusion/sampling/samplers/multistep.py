"""Deterministic multistep samplers: LMS, iPNDM and DPM-Solver++(2M).

They reuse the slopes (or denoised predictions) of earlier steps instead of extra model
calls, so they cost one model call per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import Denoiser, StepCallback, report, to_d


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node t[i-j] (nodes t[i], ..., t[i-order+1]).

    The polynomial is integrated exactly (ComfyUI uses adaptive quadrature, which is
    exact to rounding for these low degrees).
    """
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    nodes = [float(t[i - k]) for k in range(order) if k != j]
    basis = np.polynomial.Polynomial.fromroots(nodes) if nodes else np.polynomial.Polynomial([1.0])
    basis = basis / basis(float(t[i - j]))
    antiderivative = basis.integ()
    return float(antiderivative(float(t[i + 1])) - antiderivative(float(t[i])))


def sample_lms(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, order: int = 4,
) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth on a variable grid) of up to ``order`` slopes; the step to 0 is exact."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().numpy()
    slopes: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        slopes.append(to_d(x, sigmas[i], denoised))
        if len(slopes) > order:
            slopes.pop(0)
        report(callback, i, x, denoised, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        cur_order = min(i + 1, order)
        coefficients = [lms_coefficient(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(slopes), strict=True))
    return x


#: Adams-Bashforth weights for 1..4 slopes, newest first, over their common denominator.
_AB_WEIGHTS = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}


def sample_ipndm(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, max_order: int = 4,
) -> torch.Tensor:
    """Improved PNDM: fixed Adams-Bashforth weights over the last slopes (up to 4), whatever the step sizes.

    Unlike ComfyUI, whose callback always passes the *initial* x here, the callback gets
    the current state.
    """
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur * s_in, **extra_args)
        report(callback, i, x, denoised, t_cur)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        else:
            weights, denominator = _AB_WEIGHTS[order]
            if order == 1:
                x_next = x + (t_next - t_cur) * d_cur
            else:
                combined = weights[0] * d_cur
                for w, past in zip(weights[1:], reversed(history), strict=False):
                    combined = combined + w * past
                x_next = x + (t_next - t_cur) * combined / denominator
        history.append(d_cur)
        if len(history) > max_order - 1:
            history.pop(0)
        x = x_next
    return x


def sample_dpmpp_2m(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): second order from the previous denoised prediction, in ``t = -log(sigma)``."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, i, x, denoised, sigmas[i])
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            target = denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            target = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        # sigma_next / sigma as exp(-t_next) / exp(-t): it is exactly 0 on the last step (t_next = inf).
        x = ((-t_next).exp() / (-t).exp()) * x - (-h).expm1() * target
        old_denoised = denoised
    return x
