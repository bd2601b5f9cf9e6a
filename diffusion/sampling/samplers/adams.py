"""Variable-step multistep samplers: iPNDM-v and DEIS (tAB), both on ``d = (x - denoised) / sigma``.

iPNDM-v adapts the Adams-Bashforth weights of iPNDM to uneven steps; DEIS integrates the
Lagrange polynomial through the past slopes against the VP-SDE's exponential weight, in
the VP time that EDM's default range (sigma 0.002..80, eps_s 1e-3) maps sigma to. Like
ComfyUI's, their callbacks report the *initial* x at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import Denoiser, StepCallback, report

#: EDM's sigma range and VP end time that DEIS's time change assumes.
_EDM_SIGMA_MIN, _EDM_SIGMA_MAX, _VP_EPS_S = 0.002, 80.0, 1e-3
#: Points of DEIS's numerical integration per step.
_DEIS_POINTS = 10000


def _ipndm_v_weights(h: list[torch.Tensor]) -> list[torch.Tensor]:
    """Weights of the current and past slopes for steps ``h = [h_n, h_n-1, ...]`` (1 to 4 of them)."""
    order = len(h)
    if order == 1:
        return [torch.ones_like(h[0])]
    h_n, h_1 = h[0], h[1]
    w1 = (2 + h_n / h_1) / 2
    w2 = -(h_n / h_1) / 2
    if order == 2:
        return [w1, w2]
    h_2 = h[2]
    temp1 = (1 - h_n / (3 * (h_n + h_1)) * (h_n * (h_n + h_1)) / (h_1 * (h_1 + h_2))) / 2
    if order == 3:
        return [w1 + temp1, w2 - (1 + h_1 / h_2) * temp1, temp1 * h_1 / h_2]
    h_3 = h[3]
    ratio = h_1 * (h_1 + h_2) / (h_2 * (h_2 + h_3))
    temp2 = (((1 - h_n / (3 * (h_n + h_1))) / 2 + (1 - h_n / (2 * (h_n + h_1))) * h_n / (6 * (h_n + h_1 + h_2)))
             * (h_n * (h_n + h_1) * (h_n + h_1 + h_2)) / (h_1 * (h_1 + h_2) * (h_1 + h_2 + h_3)))
    return [
        w1 + temp1 + temp2,
        w2 - (1 + h_1 / h_2) * temp1 - (1 + h_1 / h_2 + ratio) * temp2,
        temp1 * h_1 / h_2 + (h_1 / h_2 + ratio * (1 + h_2 / h_3)) * temp2,
        -temp2 * ratio * h_1 / h_2,
    ]


def sample_ipndm_v(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, max_order: int = 4,
) -> torch.Tensor:
    """iPNDM with step-size-aware weights over up to ``max_order`` slopes; the step to 0 is exact."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    x_start, history = x, []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur * s_in, **extra_args)
        report(callback, i, x_start, denoised, t_cur)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        else:
            steps = [t_next - t_cur] + [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
            weights = _ipndm_v_weights(steps)
            combined = weights[0] * d_cur
            for w, past in zip(weights[1:], reversed(history), strict=False):
                combined = combined + w * past
            x_next = x + (t_next - t_cur) * combined
        history.append(d_cur)
        if len(history) > max_order - 1:
            history.pop(0)
        x = x_next
    return x


def deis_coefficients(sigmas: torch.Tensor, max_order: int) -> list[list[torch.Tensor]]:
    """DEIS-tAB's weights per step (empty for first-order steps), newest slope first."""
    sigma_min, sigma_max = torch.tensor(_EDM_SIGMA_MIN), torch.tensor(_EDM_SIGMA_MAX)
    beta_d = 2 * ((sigma_min**2 + 1).log() / _VP_EPS_S - (sigma_max**2 + 1).log()) / (_VP_EPS_S - 1)
    beta_min = (sigma_max**2 + 1).log() - 0.5 * beta_d
    sig = sigmas.detach().cpu().float()
    t_steps = ((beta_min**2 + 2 * beta_d * (sig**2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    out: list[list[torch.Tensor]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        if order == 1 or sigmas[i + 1] <= 0:
            out.append([])
            continue
        taus = torch.linspace(float(t_cur), float(t_next), _DEIS_POINTS)
        dtau = (t_next - t_cur) / _DEIS_POINTS
        log_alpha = -0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0
        alpha = log_alpha.exp()
        d_log_alpha = -(taus * (beta_1 - beta_0) + beta_0)
        integrand = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        nodes = [t_steps[i - k] for k in range(order)]
        weights = []
        for j in range(order):
            poly = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly = poly * ((taus - nodes[k]) / (nodes[j] - nodes[k]))
            weights.append(torch.sum(integrand * poly) * dtau)
        out.append(weights)
    return out


def sample_deis(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, max_order: int = 3,
) -> torch.Tensor:
    """DEIS (tAB, arXiv 2204.13902): multistep with weights integrated in VP time; the step to 0 is Euler."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    coefficients = deis_coefficients(sigmas, max_order)
    x_start, history = x, []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, t_cur * s_in, **extra_args)
        report(callback, i, x_start, denoised, t_cur)
        d_cur = (x - denoised) / t_cur
        weights = coefficients[i]
        if not weights:
            x_next = x + (t_next - t_cur) * d_cur
        else:
            x_next = x + weights[0].to(x.device) * d_cur
            for w, past in zip(weights[1:], reversed(history), strict=False):
                x_next = x_next + w.to(x.device) * past
        history.append(d_cur)
        if len(history) > max_order - 1:
            history.pop(0)
        x = x_next
    return x

