"""Conditioning tools: averaging and concatenating prompts, masks and areas with strengths.

Names, inputs and categories are ComfyUI's (``nodes.py``). The keys these nodes set on
each entry (``mask``, ``mask_strength``, ``set_area_to_bounds``, ``area``, ``strength``)
are the ones ComfyUI's sampler reads, and ours (``diffusion.denoiser``) reads them the
same way: a masked entry is weighted per pixel by its mask, an area entry runs on its
crop of the latent only.
"""

from __future__ import annotations

from typing import Annotated

from diffusion import conditioning as cond_ops

from .api import REQUIRED, Conditioning, Mask, OneOf, Range, node

_STRENGTH = Annotated[float, Range(0.0, 10.0, step=0.01)]
_FRACTION = Annotated[float, Range(0, 1.0, step=0.01)]


@node(category="conditioning", display_name="ConditioningAverage")
def ConditioningAverage(
    conditioning_to: Conditioning,
    conditioning_from: Conditioning,
    conditioning_to_strength: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0,
) -> Conditioning:
    """Mixes each entry of conditioning_to with the first entry of conditioning_from (and their pooled outputs)."""
    return cond_ops.average(conditioning_to, conditioning_from, conditioning_to_strength)


@node(category="conditioning", display_name="Conditioning (Concat)")
def ConditioningConcat(conditioning_to: Conditioning, conditioning_from: Conditioning) -> Conditioning:
    """Appends the tokens of conditioning_from's first entry to each entry of conditioning_to."""
    return cond_ops.concat(conditioning_to, conditioning_from)


@node(category="conditioning", display_name="Conditioning (Set Mask)")
def ConditioningSetMask(
    conditioning: Conditioning,
    mask: Mask,
    strength: _STRENGTH = 1.0,
    set_cond_area: Annotated[str, OneOf(("default", "mask bounds"))] = REQUIRED,
) -> Conditioning:
    """Limits the conditioning to a mask (weighted by strength); "mask bounds" also runs it on the mask's box only."""
    if mask.ndim < 3:
        mask = mask.unsqueeze(0)
    return cond_ops.set_values(conditioning, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                              "mask_strength": strength})


@node(category="conditioning", display_name="Conditioning (Set Area with Percentage)")
def ConditioningSetAreaPercentage(
    conditioning: Conditioning,
    width: _FRACTION = 1.0,
    height: _FRACTION = 1.0,
    x: _FRACTION = 0,
    y: _FRACTION = 0,
    strength: _STRENGTH = 1.0,
) -> Conditioning:
    """Limits the conditioning to a rectangle given in fractions of the image's width and height."""
    area = ("percentage", height, width, y, x)
    return cond_ops.set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False})


@node(category="conditioning", display_name="ConditioningSetAreaStrength")
def ConditioningSetAreaStrength(conditioning: Conditioning, strength: _STRENGTH = 1.0) -> Conditioning:
    """Sets the weight of the conditioning's entries where they are averaged with others."""
    return cond_ops.set_values(conditioning, {"strength": strength})
