"""Classifier-free guidance on denoised predictions (PROTOCOL.md 9.6)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

#: ``predict(x, sigma) -> denoised`` for one conditioning (positive or negative).
ConditionedDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_combine(cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cfg: float) -> torch.Tensor:
    """``uncond + (cond - uncond) * cfg``, in that order of operations (the bits match ComfyUI)."""
    return uncond_pred + (cond_pred - uncond_pred) * cfg


def skips_uncond(cfg: float, disable_cfg1_optimization: bool = False) -> bool:
    """True when the negative pass is not needed: ``cfg`` is 1.0 (``math.isclose``) and the shortcut is allowed."""
    return math.isclose(cfg, 1.0) and not disable_cfg1_optimization


def guided_denoiser(
    predict_cond: ConditionedDenoiser,
    predict_uncond: ConditionedDenoiser,
    cfg: float,
    disable_cfg1_optimization: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``denoiser(x, sigma)`` that applies CFG to two conditioned predictions.

    At cfg 1 the negative prediction is never computed: ComfyUI then combines the
    positive one with zeros, ``0 + (cond - 0) * 1.0``, which is ``cond`` exactly, so we
    return it directly. The integration layer may batch both passes itself and call
    :func:`cfg_combine` instead; this is the simple two-call form.
    """

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond = predict_cond(x, sigma)
        if skips_uncond(cfg, disable_cfg1_optimization):
            return cond
        return cfg_combine(cond, predict_uncond(x, sigma), cfg)

    return denoise
