"""Latent nodes: empty latents, resizing, batch slicing and repeating, noise masks.

A LATENT is ``{"samples": [B, 4, H/8, W/8], "batch_index"?: list[int], "noise_mask"?: tensor}``,
unscaled (PROTOCOL.md 9.7). ``batch_index`` tells the sampler which noise of a batch each
entry gets, so a slice or repeat of a batch keeps the noise its entries had. Nodes return
new dicts and never change their input, which may be cached for other nodes.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

from diffusion.resize import CROP_METHODS, UPSCALE_METHODS, upscale

from .api import REQUIRED, Latent, Mask, OneOf, Output, Range, Tooltip, node

#: ComfyUI's MAX_RESOLUTION: the largest width or height any size input takes.
MAX_RESOLUTION = 16384


@node(category="latent", display_name="Empty Latent Image")
def EmptyLatentImage(
    width: Annotated[int, Range(16, MAX_RESOLUTION, step=8),
                     Tooltip("The width of the latent images in pixels.")] = 512,
    height: Annotated[int, Range(16, MAX_RESOLUTION, step=8),
                      Tooltip("The height of the latent images in pixels.")] = 512,
    batch_size: Annotated[int, Range(1, 4096), Tooltip("The number of latent images in the batch.")] = 1,
) -> Annotated[Latent, Output(tooltip="The empty latent image batch.")]:
    """Create a new batch of empty latent images to be denoised via sampling."""
    # ComfyUI makes it on the "intermediate device", which is the CPU here.
    return {"samples": torch.zeros([batch_size, 4, height // 8, width // 8], device="cpu")}


@node(category="latent", display_name="Upscale Latent")
def LatentUpscale(
    samples: Latent,
    upscale_method: Annotated[str, OneOf(UPSCALE_METHODS)],
    width: Annotated[int, Range(0, MAX_RESOLUTION, step=8)] = 512,
    height: Annotated[int, Range(0, MAX_RESOLUTION, step=8)] = 512,
    crop: Annotated[str, OneOf(CROP_METHODS)] = REQUIRED,
) -> Latent:
    """Resizes latents to width x height pixels; a 0 side keeps the aspect ratio, both 0 leave them as they are."""
    if width == 0 and height == 0:
        return samples
    latent = samples["samples"]
    # As in ComfyUI, a resized side is never under 64 pixels.
    if width == 0:
        height = max(64, height)
        width = max(64, round(latent.shape[-1] * height / latent.shape[-2]))
    elif height == 0:
        width = max(64, width)
        height = max(64, round(latent.shape[-2] * width / latent.shape[-1]))
    else:
        width, height = max(64, width), max(64, height)
    return {**samples, "samples": upscale(latent, width // 8, height // 8, upscale_method, crop)}


@node(category="latent", display_name="Upscale Latent By")
def LatentUpscaleBy(
    samples: Latent,
    upscale_method: Annotated[str, OneOf(UPSCALE_METHODS)],
    scale_by: Annotated[float, Range(0.01, 8.0, step=0.01)] = 1.5,
) -> Latent:
    """Resizes latents by a factor."""
    latent = samples["samples"]
    width, height = round(latent.shape[-1] * scale_by), round(latent.shape[-2] * scale_by)
    return {**samples, "samples": upscale(latent, width, height, upscale_method, "disabled")}


def _masks_for_batch(masks: torch.Tensor, batch: int) -> torch.Tensor:
    """Noise masks repeated (cycling) to cover a batch of ``batch`` latents, when there are fewer."""
    if masks.shape[0] < batch:
        masks = masks.repeat(math.ceil(batch / masks.shape[0]), 1, 1, 1)[:batch]
    return masks


@node(category="latent/batch", display_name="Latent From Batch")
def LatentFromBatch(
    samples: Latent,
    batch_index: Annotated[int, Range(0, 63)] = 0,
    length: Annotated[int, Range(1, 64)] = 1,
) -> Latent:
    """Takes ``length`` latents from a batch, starting at ``batch_index``; they keep their noise when sampled."""
    latent = samples["samples"]
    start = min(latent.shape[0] - 1, batch_index)
    length = min(latent.shape[0] - start, length)
    out: dict[str, Any] = {**samples, "samples": latent[start:start + length].clone()}
    if "noise_mask" in samples:
        masks = samples["noise_mask"]
        if masks.shape[0] == 1:  # one mask for the whole batch stays one mask
            out["noise_mask"] = masks.clone()
        else:
            out["noise_mask"] = _masks_for_batch(masks, latent.shape[0])[start:start + length].clone()
    if "batch_index" in samples:
        out["batch_index"] = list(samples["batch_index"][start:start + length])
    else:
        out["batch_index"] = list(range(start, start + length))
    return out


@node(category="latent/batch", display_name="Repeat Latent Batch")
def RepeatLatentBatch(
    samples: Latent,
    amount: Annotated[int, Range(1, 64)] = 1,
) -> Latent:
    """Repeats a batch of latents ``amount`` times; each repeat gets noise indices after the previous one's."""
    latent = samples["samples"]
    out: dict[str, Any] = {**samples, "samples": latent.repeat((amount, 1, 1, 1))}
    if "noise_mask" in samples and samples["noise_mask"].shape[0] > 1:
        out["noise_mask"] = _masks_for_batch(samples["noise_mask"], latent.shape[0]).repeat((amount, 1, 1, 1))
    if "batch_index" in samples:
        indices = list(samples["batch_index"])
        offset = max(indices) - min(indices) + 1
        out["batch_index"] = indices + [x + i * offset for i in range(1, amount) for x in indices]
    return out


@node(category="latent/inpaint", display_name="Set Latent Noise Mask")
def SetLatentNoiseMask(samples: Latent, mask: Mask) -> Latent:
    """Attaches a mask to the latents: sampling only changes the masked (1) areas."""
    return {**samples, "noise_mask": mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))}
