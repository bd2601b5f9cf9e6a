"""The demo model's architecture: SD1.x at toy scale, sized so that detection derives it from shapes.

``diffusion.detect`` reads SD1 files with rules the weights cannot state (8 attention heads
per UNet block, text-encoder heads of width 64, quick-gelu, GroupNorm with 32 groups);
these configs follow them, so the trained file loads through exactly the same code as a
real SD1.5 checkpoint. 64x64 images, 8x8x4 latents.

Why no width is 32: both the VAE decoder and the UNet end in GroupNorm(32 groups) ->
SiLU -> conv. With 32 channels every group is a single channel, normalised over space,
so a flat colour (a per-channel constant) is erased right before the output: the VAE
cannot reproduce a plain background's colour and the UNet cannot predict the noise's
mean. Two channels per group (64) are the least that keeps it.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from diffusion.models import LATENT_SCALE as LATENT_SCALES

#: Native resolution of the demo model (pixels); latents are 1/8 of it.
RESOLUTION = 64
#: SD1.x latent scale, the loader's: the VAE is trained (and rescaled) so that scaled latents have unit spread.
LATENT_SCALE = LATENT_SCALES["sd1"]

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    # four levels = three 2x downsamplings = SD's 8x
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [64, 64, 64, 64],
    "latent_channels": 4,
    "layers_per_block": 1,
    "sample_size": 512,
}

TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,  # the real CLIP vocabulary: the real tokenizer feeds it
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,  # head width 64, as detection assumes
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 64,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 64],
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_CONFIG["hidden_size"],
    "transformer_layers_per_block": [1, 1],
    "attention_head_dim": 8,  # diffusers reads this as the head count for SD1 configs: 8 heads
    "use_linear_projection": False,
    "upcast_attention": False,
}


def build_vae() -> AutoencoderKL:
    """A freshly initialised demo VAE (uses torch's global RNG: seed it first), middle attention frozen as identity.

    SD1's VAE has one self-attention block in the middle of encoder and decoder, and the
    file layout (so the loader) expects its weights. At 8x8 latents it would let every
    latent cell colour every pixel, so an inpainted half would repaint the untouched half
    on decode. Its output projection is zero and frozen: the residual block passes its
    input through unchanged, and the weights are still there for the loader.
    """
    vae = AutoencoderKL(**VAE_CONFIG)
    for mid in (vae.encoder.mid_block, vae.decoder.mid_block):
        for attention in mid.attentions:
            torch.nn.init.zeros_(attention.to_out[0].weight)
            torch.nn.init.zeros_(attention.to_out[0].bias)
            attention.requires_grad_(False)
    return vae


def build_text_encoder() -> CLIPTextModel:
    """A freshly initialised demo text encoder (uses torch's global RNG)."""
    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_unet() -> UNet2DConditionModel:
    """A freshly initialised demo UNet (uses torch's global RNG)."""
    return UNet2DConditionModel(**UNET_CONFIG)


def parameters(*modules: torch.nn.Module) -> int:
    """Total parameter count of some modules."""
    return sum(p.numel() for m in modules for p in m.parameters())
