"""Write the trained demo model as an SD1.x single-file checkpoint (original LDM key names, fp16)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from diffusion import convert
from diffusion.detect import TEXT_LAYOUTS, UNET_PREFIX
from diffusion.synthetic import save_safetensors
from diffusion.train.config import TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG

ORIGIN = "noodlebox demo model: trained from scratch on procedural shapes by scripts/train_demo_model.py"


def checkpoint_tensors(
    unet: UNet2DConditionModel, vae: AutoencoderKL, text: CLIPTextModel, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """All weights under the key names of a real SD1.5 file, floats cast to ``dtype``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in convert.unet_to_ldm(unet.state_dict(), UNET_CONFIG).items():
        out[UNET_PREFIX + key] = value
    for key, value in convert.vae_to_ldm(vae.state_dict(), VAE_CONFIG).items():
        out["first_stage_model." + key] = value
    prefix, _ = TEXT_LAYOUTS["sd1"]["clip_l"]
    state = {k: v for k, v in text.state_dict().items() if not k.endswith("position_ids")}
    for key, value in convert.clip_to_ldm(state, TEXT_CONFIG["max_position_embeddings"]).items():
        out[prefix + key] = value
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v).contiguous() for k, v in out.items()}


def write_demo_checkpoint(
    path: str | os.PathLike[str], unet: UNet2DConditionModel, vae: AutoencoderKL, text: CLIPTextModel,
    metadata: dict[str, str],
) -> Path:
    """Save the three parts as one fp16 ``.safetensors`` file with ``noodlebox.origin`` and the given metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"noodlebox.origin": ORIGIN, "modelspec.prediction_type": "epsilon", **metadata}
    save_safetensors(checkpoint_tensors(unet, vae, text), path, meta)
    return path
