"""Mask nodes: solid masks, inverting, and converting between MASK and IMAGE.

MASK is ``[B, H, W]`` float in 0..1. Names, inputs and categories are those of ComfyUI's
``comfy_extras/nodes_mask.py``.
"""

from __future__ import annotations

from typing import Annotated

import torch

from .api import Image, Mask, OneOf, Range, node
from .latent import MAX_RESOLUTION

CHANNELS = ("red", "green", "blue", "alpha")

_MODULE = "comfy_extras.nodes_mask"


@node(category="mask", python_module=_MODULE)
def SolidMask(
    value: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0,
    width: Annotated[int, Range(1, MAX_RESOLUTION, step=1)] = 512,
    height: Annotated[int, Range(1, MAX_RESOLUTION, step=1)] = 512,
) -> Mask:
    """A mask of one value everywhere."""
    return torch.full((1, height, width), value, dtype=torch.float32)


@node(category="mask", python_module=_MODULE)
def InvertMask(mask: Mask) -> Mask:
    """Swaps masked and unmasked areas (1 - value)."""
    return 1.0 - mask


@node(category="mask", display_name="Convert Mask to Image", python_module=_MODULE)
def MaskToImage(mask: Mask) -> Image:
    """A grey image of the mask: each of R, G and B equals the mask value."""
    return mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)


@node(category="mask", display_name="Convert Image to Mask", python_module=_MODULE)
def ImageToMask(image: Image, channel: Annotated[str, OneOf(CHANNELS)]) -> Mask:
    """One channel of an image as a mask."""
    return image[:, :, :, CHANNELS.index(channel)]
