"""Conditioning for SD model kinds that take an image beside the latent: the SD x4 upscaler.

SD_4XUpscale_Conditioning sets the low-resolution image (pixels in [-1, 1], resized to a
quarter of the target size) and its noise augmentation on both conditionings, as ComfyUI's
node does, and starts an empty latent at a quarter of the target size (the x4 upscaler's VAE
downsamples by 4). The entries carry ComfyUI's keys (``concat_image``, ``noise_augmentation``), which
the sampler turns into the x4 upscaler's extra input channels and noise level (``diffusion.x4_upscaler``).
"""

from __future__ import annotations

from typing import Annotated

from .api import Conditioning, Image, Latent, Output, Range, Tooltip, node

#: Pixels per latent pixel of the x4 upscaler's VAE.
X4_LATENT_FACTOR = 4


@node(category="conditioning/upscale_diffusion", python_module="comfy_extras.nodes_sdupscale")
def SD_4XUpscale_Conditioning(
    images: Annotated[Image, Tooltip("The low-resolution images to upscale.")],
    positive: Conditioning,
    negative: Conditioning,
    scale_ratio: Annotated[float, Range(0.0, 10.0, step=0.01), Tooltip("How much larger the result is.")] = 4.0,
    noise_augmentation: Annotated[float, Range(0.0, 1.0, step=0.001),
                                  Tooltip("Noise added to the low-resolution image, 0 to 1.")] = 0.0,
) -> tuple[Annotated[Conditioning, Output("positive")], Annotated[Conditioning, Output("negative")],
           Annotated[Latent, Output("latent")]]:
    """Sets the image to upscale on both conditionings for the SD x4 upscaler; the latent starts empty."""
    import torch

    from diffusion import conditioning as cond_ops
    from diffusion.resize import upscale

    if getattr(images, "ndim", 0) != 4 or images.shape[0] < 1:
        raise ValueError("SD_4XUpscale_Conditioning: images must be an IMAGE batch [B, H, W, C]")
    width = max(1, round(images.shape[2] * scale_ratio))
    height = max(1, round(images.shape[1] * scale_ratio))
    if width < X4_LATENT_FACTOR or height < X4_LATENT_FACTOR:
        raise ValueError(f"SD_4XUpscale_Conditioning: a scale_ratio of {scale_ratio} makes the "
                         f"{images.shape[2]}x{images.shape[1]} image smaller than 4 pixels")
    low = width // X4_LATENT_FACTOR, height // X4_LATENT_FACTOR
    pixels = upscale(images.movedim(-1, 1).float() * 2.0 - 1.0, low[0], low[1], "bilinear", "center")
    values = {"concat_image": pixels, "noise_augmentation": float(noise_augmentation)}
    latent = torch.zeros((images.shape[0], 4, low[1], low[0]))
    return cond_ops.set_values(positive, values), cond_ops.set_values(negative, values), {"samples": latent}
