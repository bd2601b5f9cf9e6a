"""The SD x4 upscaler (stabilityai's ``x4-upscaler-ema``): what it needs beside the SD2 machinery.

Facts, as ComfyUI's ``SD_X4Upscaler`` model and its supported-model entry hold them:

- the UNet takes 7 channels: the noisy latent and the low-resolution RGB image (pixels in
  [-1, 1]), resized bilinearly with a centre crop to the latent's size;
- a noise-level class embedding (``label_emb``, 1000 classes) gets the augmentation level
  ``round(350 * noise_augmentation)``; above 0, the image is noised first as a DDPM forward
  step at that level on a linear beta schedule from 1e-4 to 0.02, with noise drawn from a
  generator seeded with the sampling seed minus 10;
- v-prediction, on that same 1e-4..0.02 linear schedule; 8 attention heads; the first three
  levels' ``attn1`` attend to the text instead of to themselves;
- the VAE downsamples by 4 (three levels) and scales latents by 0.08333;
- the text encoder is SD2's OpenCLIP ViT-H.

The synthetic writer gives ``make-checkpoint --arch sd-x4-upscaler`` the same layout.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diffusion.resize import upscale
from diffusion.sampling.schedule import DiscreteSchedule, Prediction

LATENT_SCALE = 0.08333
LINEAR_START, LINEAR_END = 0.0001, 0.02
MAX_NOISE_LEVEL = 350
NUM_CLASSES = 1000
#: The augmentation noise's seed is the sampling seed minus this.
SEED_OFFSET = 10

#: size -> (UNet widths, attention per level, blocks per level, VAE widths, VAE blocks per level)
_SHAPES = {
    "tiny": ((32, 96, 128), (0, 1, 1), 1, (32, 32, 32), 1),
    "small": ((256, 512, 512), (0, 1, 1), 1, (128, 256, 512), 2),
    "full": ((256, 512, 512, 1024), (0, 1, 1, 1), 2, (128, 256, 512), 2),
}


def schedule(prediction: Prediction = "v") -> DiscreteSchedule:
    """The x4 upscaler's discrete schedule (v-prediction unless the caller says otherwise)."""
    return DiscreteSchedule(LINEAR_START, LINEAR_END, prediction=prediction)


def noise_level(noise_augmentation: float) -> int:
    """The class label for an augmentation amount in [0, 1] (Python's rounding, as ComfyUI's)."""
    return round(MAX_NOISE_LEVEL * float(noise_augmentation))


def augment(image: torch.Tensor, level: int, seed: int) -> torch.Tensor:
    """The image after ``level`` steps of forward diffusion: ``sqrt(abar) x + sqrt(1 - abar) noise``."""
    betas = torch.linspace(LINEAR_START**0.5, LINEAR_END**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    keep = alphas_cumprod.sqrt().float()[level]
    spread = (1.0 - alphas_cumprod).sqrt().float()[level]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(image.size(), dtype=image.dtype, generator=generator)
    return keep * image + spread * noise.to(image.device)


def unet_inputs(options: Mapping[str, Any], latent_shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, int]:
    """An entry's extra UNet channels ``[1 or B, 3, H, W]`` and its noise-level label, from its
    ``concat_image`` and ``noise_augmentation`` (SD_4XUpscale_Conditioning's keys)."""
    batch, _, height, width = latent_shape
    amount = float(options.get("noise_augmentation", 0.0))
    level = noise_level(amount)
    image = options.get("concat_image")
    if image is None:
        image = torch.zeros((batch, 3, height, width))
    else:
        image = upscale(image.float(), width, height, "bilinear", "center")
    if amount > 0:
        image = augment(image, level, seed - SEED_OFFSET)
    return image, level


# ----------------------------------------------------------------------------- test checkpoints


def synthetic_spec(size: str = "tiny") -> Any:
    """The SD2 spec with the x4 upscaler's UNet (7 channels in, class embedding, cross-only levels) and VAE."""
    from diffusion.synthetic import synthetic_spec as base_spec

    spec = base_spec("sd2-v", size)
    widths, depths, per_level, vae_widths, vae_layers = _SHAPES[size]
    unet = {
        **spec.unet,
        "in_channels": 7,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        "block_out_channels": list(widths),
        "layers_per_block": per_level,
        "transformer_layers_per_block": [1] * len(widths),
        "attention_head_dim": 8,
        "upcast_attention": False,
        "num_class_embeds": NUM_CLASSES,
        "only_cross_attention": [True] * (len(widths) - 1) + [False],
    }
    vae = {**spec.vae, "block_out_channels": list(vae_widths), "layers_per_block": vae_layers,
           "down_block_types": ["DownEncoderBlock2D"] * len(vae_widths),
           "up_block_types": ["UpDecoderBlock2D"] * len(vae_widths)}
    return dataclasses.replace(spec, name="sd-x4-upscaler", unet=unet, vae=vae)


def write_checkpoint(path: str | os.PathLike[str], size: str = "tiny", seed: int = 0,
                     dtype: torch.dtype = torch.float16) -> Path:
    """Write a seeded random x4 upscaler checkpoint in the original single-file layout."""
    from diffusion.files import atomic_path
    from diffusion.synthetic import ORIGIN, original_layout, random_weights, save_safetensors

    spec = synthetic_spec(size)
    tensors = original_layout(spec, random_weights(spec, seed), seed)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    metadata = {"noodlebox.origin": ORIGIN, "noodlebox.arch": spec.name, "noodlebox.size": size,
                "noodlebox.seed": str(seed), "modelspec.prediction_type": "v"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata)
    return path
