"""Classifier-free guidance on denoised predictions (PROTOCOL.md 9.6), with ComfyUI's hooks.

A MODEL's ``options`` (ComfyUI's ``model_options``) may change how the two predictions
are combined; :func:`guide` applies them in ComfyUI's order:

1. ``sampler_pre_cfg_function`` (a list): each gets ``{"conds", "conds_out", "cond_scale",
   "timestep", "input", "sigma", "model", "model_options"}`` and returns the new
   ``[cond_pred, uncond_pred]``;
2. ``sampler_cfg_function`` (one callable) replaces the CFG formula: it gets the
   predictions as *noise* (``cond = x - cond_pred``, ``uncond = x - uncond_pred``) plus
   ``cond_denoised``/``uncond_denoised`` and returns ``x - result``;
3. ``sampler_post_cfg_function`` (a list): each gets ``{"denoised", "cond", "uncond",
   "cond_scale", "model", "uncond_denoised", "cond_denoised", "sigma", "model_options",
   "input"}`` and returns the new denoised prediction.

``disable_cfg1_optimization`` forces the negative pass at cfg 1 (the cfg++ samplers and
several guidance patches need the negative prediction). When the negative pass is
skipped, the negative prediction the hooks see is zeros, as in ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

#: ``predict(x, sigma) -> denoised`` for one conditioning (positive or negative).
ConditionedDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_combine(cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cfg: float) -> torch.Tensor:
    """``uncond + (cond - uncond) * cfg``, in that order of operations (the bits match ComfyUI)."""
    return uncond_pred + (cond_pred - uncond_pred) * cfg


def skips_uncond(cfg: float, disable_cfg1_optimization: bool = False) -> bool:
    """True when the negative pass is not needed: ``cfg`` is 1.0 (``math.isclose``) and the shortcut is allowed."""
    return math.isclose(cfg, 1.0) and not disable_cfg1_optimization


def options_skip_uncond(cfg: float, model_options: Mapping[str, Any] | None) -> bool:
    """:func:`skips_uncond` with the shortcut flag read from a ``model_options`` dict."""
    return skips_uncond(cfg, bool((model_options or {}).get("disable_cfg1_optimization", False)))


def guide(
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond_pred: torch.Tensor,
    uncond_pred: torch.Tensor | None,
    cfg: float,
    model_options: Mapping[str, Any] | None = None,
    cond: Any = None,
    uncond: Any = None,
    model: Any = None,
) -> torch.Tensor:
    """Combine the two predictions of ``x`` at ``sigma`` with the hooks of ``model_options`` (see module doc).

    ``uncond_pred`` None means the negative pass was skipped (zeros are used, which makes
    plain CFG give ``cond_pred`` exactly). ``cond``/``uncond`` are the conditioning lists
    and ``model`` the MODEL value, passed to the hooks as ComfyUI does.
    """
    options = model_options or {}
    if uncond_pred is None:
        uncond_pred = torch.zeros_like(cond_pred)
        uncond = None
    pre = options.get("sampler_pre_cfg_function", ())
    if pre:
        outputs = [cond_pred, uncond_pred]
        for fn in pre:
            outputs = fn({"conds": [cond, uncond], "conds_out": outputs, "cond_scale": cfg, "timestep": sigma,
                          "input": x, "sigma": sigma, "model": model, "model_options": options})
        cond_pred, uncond_pred = outputs[0], outputs[1]
    cfg_function = options.get("sampler_cfg_function")
    if cfg_function is not None:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cfg, "timestep": sigma, "input": x,
                "sigma": sigma, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred, "model": model,
                "model_options": options}
        result = x - cfg_function(args)
    else:
        result = cfg_combine(cond_pred, uncond_pred, cfg)
    for fn in options.get("sampler_post_cfg_function", ()):
        result = fn({"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cfg, "model": model,
                     "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": sigma,
                     "model_options": options, "input": x})
    return result


def has_cfg_hooks(model_options: Mapping[str, Any] | None) -> bool:
    """True when ``model_options`` holds any hook :func:`guide` runs."""
    options = model_options or {}
    return bool(options.get("sampler_pre_cfg_function") or options.get("sampler_cfg_function")
                or options.get("sampler_post_cfg_function"))


def guided_denoiser(
    predict_cond: ConditionedDenoiser,
    predict_uncond: ConditionedDenoiser,
    cfg: float,
    disable_cfg1_optimization: bool = False,
) -> Callable[..., torch.Tensor]:
    """A ``denoiser(x, sigma, model_options=None)`` that applies CFG to two conditioned predictions.

    At cfg 1 the negative prediction is never computed (unless ``disable_cfg1_optimization``,
    here or in the call's ``model_options``): ComfyUI then combines the positive one with
    zeros, ``0 + (cond - 0) * 1.0``, which is ``cond`` exactly, so we return it directly
    when no hook runs. The integration layer may batch both passes itself and call
    :func:`guide` instead; this is the simple two-call form.
    """

    def denoise(x: torch.Tensor, sigma: torch.Tensor, model_options: Mapping[str, Any] | None = None) -> torch.Tensor:
        options = dict(model_options or {})
        if disable_cfg1_optimization:
            options["disable_cfg1_optimization"] = True
        cond = predict_cond(x, sigma)
        skip = options_skip_uncond(cfg, options)
        if skip and not has_cfg_hooks(options):
            return cond
        return guide(x, sigma, cond, None if skip else predict_uncond(x, sigma), cfg, options)

    return denoise
