"""GUIDER values: how the conditioned UNet predictions of one step become one denoised prediction.

A guider holds a MODEL, its conditionings and scales, and makes the sampler's denoiser for
one run (:meth:`Guider.denoiser`). All of them are built on
:class:`diffusion.denoiser.Denoiser`, whose :meth:`~diffusion.denoiser.Denoiser.predict`
runs several conditioning lists in shared UNet calls (ComfyUI's ``calc_cond_batch``), and
honour the MODEL's ``options`` (CFG hooks, wrappers) as ComfyUI's guiders do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffusion.denoiser import Denoiser
from diffusion.models import UNetModel
from diffusion.sampling.cfg import guide

Conds = Sequence[Sequence[Any]]


def require_model(model: UNetModel | None) -> UNetModel:
    if model is None:
        raise ValueError("the guider has no model: connect a MODEL (a loader gave none)")
    return model


@dataclass(frozen=True, eq=False)
class Guider:
    """Base of the guiders: the MODEL and the conditioning it samples with."""

    model: UNetModel

    def denoiser(self, latent_shape: Sequence[int], latent_image: torch.Tensor | None = None,
                 denoise_mask: torch.Tensor | None = None) -> Denoiser:
        """The sampler's ``denoiser(x, sigma, model_options=None)`` for one run."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class CFGGuider(Guider):
    """Classifier-free guidance: ``negative + (positive - negative) * cfg`` (or the MODEL's CFG hooks)."""

    positive: Conds = ()
    negative: Conds = ()
    cfg: float = 8.0

    def denoiser(self, latent_shape: Sequence[int], latent_image: torch.Tensor | None = None,
                 denoise_mask: torch.Tensor | None = None) -> Denoiser:
        """A :class:`Denoiser`, exactly what KSampler builds for the same inputs."""
        return Denoiser(require_model(self.model), self.positive, self.negative, self.cfg, latent_shape,
                        latent_image=latent_image, denoise_mask=denoise_mask)


@dataclass(frozen=True, eq=False)
class BasicGuider(Guider):
    """The positive prediction alone (cfg 1, no negative): for distilled and flux-like models."""

    conditioning: Conds = ()

    def denoiser(self, latent_shape: Sequence[int], latent_image: torch.Tensor | None = None,
                 denoise_mask: torch.Tensor | None = None) -> Denoiser:
        """A :class:`Denoiser` with an empty negative side (hooks that read it see zeros)."""
        return Denoiser(require_model(self.model), self.conditioning, [], 1.0, latent_shape,
                        latent_image=latent_image, denoise_mask=denoise_mask)


class _DualDenoiser(Denoiser):
    """Two guidance scales: cond1 against cond2, and cond2 against the negative (sides 0, 2 and 1)."""

    def __init__(self, guider: DualCFGGuider, latent_shape: Sequence[int], latent_image: torch.Tensor | None,
                 denoise_mask: torch.Tensor | None) -> None:
        super().__init__(require_model(guider.model), guider.cond1, guider.negative, guider.cfg_conds,
                         latent_shape, latent_image=latent_image, denoise_mask=denoise_mask, extra=[guider.cond2])
        self.guider = guider

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 model_options: Mapping[str, Any] | None = None) -> torch.Tensor:
        """``nested``: ``neg + cfg2 * (cfg(cond1, cond2, cfg1) - neg)``; else
        ``cfg(cond2, neg, cfg2) + (cond1 - cond2) * cfg1``, skipping passes a scale of 1 does not need."""
        g, options = self.guider, self.options(model_options)
        if g.nested:
            negative, middle, positive = self.predict(x, sigma, [1, 2, 0], options)
            text = guide(x, sigma, positive, middle, g.cfg_conds, options, g.cond1, g.cond2, self.unet)
            return negative + g.cfg_cond2_negative * (text - negative)
        run_negative, run_middle = True, True
        if not options.get("disable_cfg1_optimization", False) and math.isclose(g.cfg_cond2_negative, 1.0):
            run_negative = False
            run_middle = not math.isclose(g.cfg_conds, 1.0)
        negative, middle, positive = self.predict(
            x, sigma, [1 if run_negative else None, 2 if run_middle else None, 0], options)
        guided = guide(x, sigma, middle, negative if run_negative else None, g.cfg_cond2_negative, options,
                       g.cond2 if run_middle else None, g.negative if run_negative else None, self.unet)
        return guided + (positive - middle) * g.cfg_conds


@dataclass(frozen=True, eq=False)
class DualCFGGuider(Guider):
    """Guidance by two conditionings: ``cond1`` over ``cond2`` at ``cfg_conds``, ``cond2`` over the negative
    at ``cfg_cond2_negative``; ``nested`` applies the second around the first instead of adding them."""

    cond1: Conds = ()
    cond2: Conds = ()
    negative: Conds = ()
    cfg_conds: float = 8.0
    cfg_cond2_negative: float = 8.0
    nested: bool = False

    def denoiser(self, latent_shape: Sequence[int], latent_image: torch.Tensor | None = None,
                 denoise_mask: torch.Tensor | None = None) -> Denoiser:
        """The dual-scale denoiser."""
        return _DualDenoiser(self, latent_shape, latent_image, denoise_mask)


def perp_neg(x: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, empty: torch.Tensor, neg_scale: float,
             cfg: float) -> torch.Tensor:
    """Perp-Neg (arXiv 2304.04968): push away only from the part of the negative perpendicular to the positive.

    All three are predictions relative to the empty prompt's; the result is
    ``empty + cfg * (pos - neg_scale * perp(neg, pos))``.
    """
    pos = positive - empty
    neg = negative - empty
    perp = neg - (torch.mul(neg, pos).sum() / (torch.norm(pos) ** 2)) * pos
    return empty + cfg * (pos - perp * neg_scale)


class _PerpNegDenoiser(Denoiser):
    """Positive, negative and empty predictions (sides 0, 1, 2) combined by :func:`perp_neg`."""

    def __init__(self, guider: PerpNegGuider, latent_shape: Sequence[int], latent_image: torch.Tensor | None,
                 denoise_mask: torch.Tensor | None) -> None:
        super().__init__(require_model(guider.model), guider.positive, guider.negative, guider.cfg, latent_shape,
                         latent_image=latent_image, denoise_mask=denoise_mask, extra=[guider.empty_conditioning])
        self.guider = guider

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor,
                 model_options: Mapping[str, Any] | None = None) -> torch.Tensor:
        """:func:`perp_neg`, then the MODEL's post-CFG hooks (with ``empty_cond`` and ``empty_cond_denoised``)."""
        g, options = self.guider, self.options(model_options)
        positive, negative, empty = self.predict(x, sigma, [0, 1, 2], options)
        result = perp_neg(x, positive, negative, empty, g.neg_scale, g.cfg)
        for fn in options.get("sampler_post_cfg_function", ()):
            result = fn({"denoised": result, "cond": g.positive, "uncond": g.negative, "model": self.unet,
                         "uncond_denoised": negative, "cond_denoised": positive, "sigma": sigma,
                         "model_options": options, "input": x, "empty_cond": g.empty_conditioning,
                         "empty_cond_denoised": empty})
        return result


@dataclass(frozen=True, eq=False)
class PerpNegGuider(Guider):
    """CFG with the Perp-Neg negative: ``empty_conditioning`` is the neutral prompt the others are measured from."""

    positive: Conds = ()
    negative: Conds = ()
    empty_conditioning: Conds = ()
    cfg: float = 8.0
    neg_scale: float = 1.0

    def denoiser(self, latent_shape: Sequence[int], latent_image: torch.Tensor | None = None,
                 denoise_mask: torch.Tensor | None = None) -> Denoiser:
        """The perp-neg denoiser (three predictions per step)."""
        return _PerpNegDenoiser(self, latent_shape, latent_image, denoise_mask)
