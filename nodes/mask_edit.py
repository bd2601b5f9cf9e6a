"""Mask editing nodes: crop, feather, grow, threshold, combine, colour picking, alpha and Porter-Duff compositing.

MASK is ``[B, H, W]`` float in 0..1; in the alpha nodes a mask is ``1 - alpha``, as
LoadImage gives it. Names, inputs and categories are those of ComfyUI's
``comfy_extras/nodes_mask.py`` and ``nodes_compositing.py``; the work is in
``diffusion.mask_ops``.
"""

from __future__ import annotations

from typing import Annotated

import torch

from diffusion.mask_ops import (
    MASK_OPERATIONS,
    PORTER_DUFF_MODES,
    as_batch,
    color_to_mask,
    combine,
    feather,
    grow,
    porter_duff,
    resize_mask,
)

from .api import (
    REQUIRED,
    Context,
    ExtraPngInfo,
    HiddenPrompt,
    Image,
    Mask,
    OneOf,
    Range,
    Result,
    node,
)
from .image import PreviewImage

_MASK = "comfy_extras.nodes_mask"
_COMPOSITING = "comfy_extras.nodes_compositing"
_SIDE = 16384


@node(category="mask", display_name="CropMask", python_module=_MASK)
def CropMask(
    mask: Mask,
    x: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    y: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    width: Annotated[int, Range(1, _SIDE, step=1)] = 512,
    height: Annotated[int, Range(1, _SIDE, step=1)] = 512,
) -> Mask:
    """Crops a width x height area at (x, y); an area running past the edges is cut at them."""
    mask = as_batch(mask)
    if x >= mask.shape[2] or y >= mask.shape[1]:
        raise ValueError(f"the crop starts at ({x}, {y}), outside the {mask.shape[2]}x{mask.shape[1]} mask")
    return mask[:, y : y + height, x : x + width]


@node(category="mask", display_name="FeatherMask", python_module=_MASK)
def FeatherMask(
    mask: Mask,
    left: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    top: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    right: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    bottom: Annotated[int, Range(0, _SIDE, step=1)] = 0,
) -> Mask:
    """Fades the mask out linearly toward each side over the given number of pixels."""
    return feather(mask, left, top, right, bottom)


@node(category="mask", display_name="GrowMask", python_module=_MASK)
def GrowMask(
    mask: Mask,
    expand: Annotated[int, Range(-_SIDE, _SIDE, step=1)] = 0,
    tapered_corners: bool = True,
) -> Mask:
    """Grows (positive ``expand``) or shrinks (negative) the mask by that many pixels; tapered corners stay cut."""
    return grow(mask, expand, tapered_corners)


@node(category="mask", display_name="ThresholdMask", python_module=_MASK)
def ThresholdMask(mask: Mask, value: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.5) -> Mask:
    """1 where the mask is above ``value``, else 0."""
    return (mask > value).float()


@node(category="mask", display_name="ImageColorToMask", python_module=_MASK)
def ImageColorToMask(
    image: Image,
    color: Annotated[int, Range(0, 0xFFFFFF, step=1, display="color")] = 0,
) -> Mask:
    """1 where the image's 8-bit colour is exactly ``color`` (0xRRGGBB), else 0."""
    return color_to_mask(image, color)


@node(category="mask", display_name="MaskComposite", python_module=_MASK)
def MaskComposite(
    destination: Mask,
    source: Mask,
    x: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    y: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    operation: Annotated[str, OneOf(MASK_OPERATIONS)] = REQUIRED,
) -> Mask:
    """Combines source into destination at (x, y): multiply, add, subtract, or the logical and/or/xor."""
    return combine(destination, source, x, y, operation)


@node(category="mask", display_name="MaskPreview", output_node=True, python_module=_MASK)
def MaskPreview(
    mask: Mask,
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Shows the mask in the editor as a grey image (saved to the temporary folder)."""
    mask = as_batch(mask)
    images = mask[..., None].expand(-1, -1, -1, 3)
    return PreviewImage(images, prompt, extra_pnginfo, ctx=ctx)


@node(category="mask/compositing", display_name="Join Image with Alpha", python_module=_COMPOSITING)
def JoinImageWithAlpha(image: Image, alpha: Mask) -> Image:
    """Adds an alpha channel (``1 - mask``, resized to the image) to RGB images."""
    count = min(len(image), len(as_batch(alpha)))
    opacity = 1.0 - resize_mask(alpha, image.shape[1], image.shape[2])
    return torch.cat((image[:count, ..., :3], opacity[:count, ..., None].to(image.dtype)), dim=-1)


@node(category="mask/compositing", display_name="Split Image with Alpha", python_module=_COMPOSITING)
def SplitImageWithAlpha(image: Image) -> tuple[Image, Mask]:
    """Separates RGB from alpha; the mask is ``1 - alpha`` (zeros when there is no alpha channel)."""
    alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
    return image[..., :3], 1.0 - alpha


@node(category="mask/compositing", display_name="Porter-Duff Image Composite", python_module=_COMPOSITING)
def PorterDuffImageComposite(
    source: Image,
    source_alpha: Mask,
    destination: Image,
    destination_alpha: Mask,
    mode: Annotated[str, OneOf(PORTER_DUFF_MODES, v3=True)] = "DST",
) -> tuple[Image, Mask]:
    """Composites source over destination with one of the Porter-Duff operators, using their alpha masks."""
    return porter_duff(source, source_alpha, destination, destination_alpha, mode)
