"""UniPC (Zhao et al. 2023), multistep predictor-corrector, data prediction, as ComfyUI runs it.

UniPC works on the variance-preserving latent ``x / sqrt(1 + sigma^2)`` with
``alpha = 1 / sqrt(1 + sigma^2)`` and ``lambda = log(alpha / std)``. ComfyUI's quirks kept
here: a final sigma of 0 is replaced by 0.001 (ComfyUI edits the caller's tensor in
place; we edit a copy), the last two updates happen in the last step, and the callback's
``x`` is the VP-scaled state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.samplers.base import Denoiser, StepCallback, report
from diffusion.sampling.schedule import broadcast_sigma

Variant = Literal["bh1", "bh2"]
_DataPrediction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _log_alpha(sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(_log_alpha(sigma))


def _std(sigma: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _update(
    predict: _DataPrediction, x: torch.Tensor, model_prev: list[torch.Tensor], t_prev: list[torch.Tensor],
    t: torch.Tensor, order: int, use_corrector: bool, variant: Variant,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UniP step of ``order`` to time ``t`` and, with ``use_corrector``, its UniC correction.

    Returns the new state and the model's prediction there (None without corrector).
    """
    ndim = x.ndim
    t_prev_0, model_prev_0 = t_prev[-1], model_prev[-1]
    lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
    sigma_prev_0, sigma_t = _std(t_prev_0), _std(t)
    alpha_t = torch.exp(_log_alpha(t))
    h = lambda_t - lambda_prev_0

    rks: list[Any] = []
    slopes: list[torch.Tensor] = []
    for i in range(1, order):
        rk = ((_lambda(t_prev[-(i + 1)]) - lambda_prev_0) / h)[0]
        rks.append(rk)
        slopes.append((model_prev[-(i + 1)] - model_prev_0) / rk)
    rks.append(1.0)
    rks_t = torch.tensor(rks, device=x.device)

    hh = -h[0]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b = [], []
    factorial = 1
    for i in range(1, order + 1):
        rows.append(torch.pow(rks_t, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_matrix = torch.stack(rows)
    b_t = torch.tensor(b, device=x.device)

    d1s = torch.stack(slopes, dim=1) if slopes else None
    x_t_ = broadcast_sigma(sigma_t / sigma_prev_0, ndim) * x - broadcast_sigma(alpha_t * h_phi_1, ndim) * model_prev_0
    step_scale = broadcast_sigma(alpha_t * b_h, ndim)

    if d1s is not None:
        if order == 2:
            rhos_p = torch.tensor([0.5], device=x.device)
        else:
            rhos_p = torch.linalg.solve(r_matrix[:-1, :-1], b_t[:-1])
        x_t = x_t_ - step_scale * torch.einsum("k,bk...->b...", rhos_p, d1s)
    else:
        x_t = x_t_ - step_scale * 0
    if not use_corrector:
        return x_t, None

    rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(r_matrix, b_t)
    model_t = predict(x_t, t)
    corr_res: Any = torch.einsum("k,bk...->b...", rhos_c[:-1], d1s) if d1s is not None else 0
    x_t = x_t_ - step_scale * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
    return x_t, model_t


def sample_uni_pc(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None, variant: Variant = "bh1",
) -> torch.Tensor:
    """UniPC multistep (order up to 3, lower order on the final steps); ``variant`` is B(h) = h or e^h - 1."""
    extra_args = extra_args or {}
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    batch = x.shape[0]

    def predict(x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = broadcast_sigma(t, x_vp.ndim)
        x_in = x_vp * ((sigma**2 + 1.0) ** 0.5)
        eps = (x_in - model(x_in, t, **extra_args)) / sigma
        return (x_vp - broadcast_sigma(_std(t), x_vp.ndim) * eps) / broadcast_sigma(_alpha(t), x_vp.ndim)

    x = x / torch.sqrt(1.0 + timesteps[0] ** 2.0)
    steps = len(timesteps) - 1
    order = min(3, len(timesteps) - 2)
    model_prev: list[torch.Tensor] = []
    t_prev: list[torch.Tensor] = []
    for step_index in range(steps):
        if step_index == 0:
            vec_t = timesteps[0].expand(batch)
            model_prev, t_prev = [predict(x, vec_t)], [vec_t]
        elif step_index < order:
            vec_t = timesteps[step_index].expand(batch)
            x, model_x = _update(predict, x, model_prev, t_prev, vec_t, step_index, True, variant)
            model_prev.append(model_x if model_x is not None else predict(x, vec_t))
            t_prev.append(vec_t)
        else:
            # The last step also takes the final update, which needs no model call.
            last = steps if step_index == steps - 1 else step_index
            for step in range(step_index, last + 1):
                vec_t = timesteps[step].expand(batch)
                step_order = min(order, steps + 1 - step)
                x, model_x = _update(predict, x, model_prev, t_prev, vec_t, step_order, step != steps, variant)
                t_prev = [*t_prev[1:order], vec_t] if order > 1 else [vec_t]
                model_prev = [*model_prev[1:order], model_prev[-1]] if order > 1 else model_prev
                if step < steps:
                    model_prev[-1] = model_x if model_x is not None else predict(x, vec_t)
        report(callback, step_index, x, model_prev[-1], sigmas[step_index])
    return x / _alpha(timesteps[-1])


def sample_uni_pc_bh2(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None, noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """UniPC with B(h) = e^h - 1."""
    return sample_uni_pc(model, x, sigmas, extra_args, callback, noise_sampler, variant="bh2")
