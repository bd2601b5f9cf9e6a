"""The image inputs of an inpainting model (9-channel UNet), as ComfyUI's InpaintModelConditioning makes them.

The model reads, besides the noisy latent, the mask and the latent of the image with the
masked pixels set to mid grey. Pixels are centre-cropped to multiples of 8; the mask is
resized (bilinear) to the pixels' size and cropped with them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffusion.vae import DOWNSCALE, crop_to_multiple


def inpaint_model_inputs(pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels with the masked part grey, mask [B, 1, H, W]) for an IMAGE ``[B, H, W, C]`` and a MASK.

    A mask of one entry serves every image; any other batch must match the image's. Raises
    ``ValueError`` with a one-line reason for masks of another shape.
    """
    if mask.ndim not in (2, 3) and not (mask.ndim == 4 and mask.shape[1] == 1):
        raise ValueError(f"the mask must be [H, W] or [B, H, W], not of shape {tuple(mask.shape)}")
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    if mask.shape[0] not in (1, pixels.shape[0]):
        raise ValueError(f"the mask has a batch of {mask.shape[0]} but the image has {pixels.shape[0]}")
    height, width = pixels.shape[1], pixels.shape[2]
    mask = F.interpolate(mask, size=(height, width), mode="bilinear")
    cropped = crop_to_multiple(pixels, DOWNSCALE)
    if cropped.shape[1:3] != pixels.shape[1:3]:
        y, x = (height % DOWNSCALE) // 2, (width % DOWNSCALE) // 2
        mask = mask[:, :, y:y + cropped.shape[1], x:x + cropped.shape[2]]
    keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
    grey = (cropped[..., :3].float() - 0.5) * keep + 0.5
    return grey, mask
