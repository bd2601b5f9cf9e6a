"""CLIP vision encoders (CLIP_VISION) from single files, and ComfyUI's image preprocessing for them.

Files in transformers' layout (``vision_model.*`` and ``visual_projection.weight``, bare or
under a prefix), as ComfyUI's ``clip_vision`` folder holds them: ViT-L/14 (OpenAI, 224 or
336 pixels), ViT-H/14 and ViT-bigG/14 (LAION); OpenCLIP-layout files (``visual.*``) are converted
by ``diffusion.control.clip_vision_openclip``. The config comes from the shapes: width,
depth, MLP width, patch size, image size (from the position embeddings) and projection.
Not in the weights: heads (16 for the three published widths, else a head dimension of 64)
and the activation (quick-gelu for OpenAI's 1024-wide ViT-L, gelu for the LAION models), as
ComfyUI's configs have them.

Encoding resizes as ComfyUI's ``clip_preprocess`` does: bicubic with antialiasing, the short
side to the model's size and a centre crop (``crop="center"``) or straight to a square
(``"none"``), rounded to 8-bit levels, then normalised with CLIP's mean and std.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import CLIPVisionModelWithProjection

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.precision import Precision, resolve_precision

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PROBE = "vision_model.embeddings.patch_embedding.weight"
#: Heads of the published encoders by width: 16 for all three (heads of 64, 80 and 104 wide).
_HEADS = {1024: 16, 1280: 16, 1664: 16}


@dataclass(eq=False)
class ClipVisionModel:
    """A loaded CLIP vision encoder: the transformers module and its input size."""

    model: CLIPVisionModelWithProjection
    image_size: int
    device: torch.device
    dtype: torch.dtype


class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: ``last_hidden_state``, ``penultimate_hidden_states`` and ``image_embeds``.

    Read as attributes or as items (``output["image_embeds"]``), as ComfyUI's object allows.
    """

    def __init__(self, last_hidden_state: torch.Tensor, penultimate_hidden_states: torch.Tensor,
                 image_embeds: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state
        self.penultimate_hidden_states = penultimate_hidden_states
        self.image_embeds = image_embeds

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)


def vision_config(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> dict[str, Any]:
    """``CLIPVisionConfig`` arguments for transformers-layout weights under ``prefix``."""
    p = prefix + "vision_model."
    hidden, _, patch, _ = shapes[p + "embeddings.patch_embedding.weight"]
    positions = shapes[p + "embeddings.position_embedding.weight"][0]
    layers = {int(m[1]) for k in shapes if (m := re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.", k))}
    grid = round((positions - 1) ** 0.5)
    if grid * grid + 1 != positions:
        raise CheckpointError(f"a CLIP vision model with {positions} positions is not square")
    return {
        "hidden_size": hidden,
        "intermediate_size": shapes[p + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": _HEADS.get(hidden, max(1, hidden // 64)),
        "patch_size": patch,
        "image_size": grid * patch,
        "projection_dim": shapes[prefix + "visual_projection.weight"][0],
        "hidden_act": "quick_gelu" if hidden == 1024 else "gelu",
    }


def load_clip_vision(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                     device: torch.device | str = "cpu") -> ClipVisionModel:
    """Load a CLIP vision file; :class:`CheckpointError` with a one-line reason for anything else."""
    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    from diffusion.control.clip_vision_openclip import find_vision_prefix, load_clip_vision_from

    with TensorFile(path) as file:
        found = find_vision_prefix(file.shapes)
        if found is None:
            raise CheckpointError(f"{file.path.name}: not a CLIP vision model (no {_PROBE} "
                                  "and no OpenCLIP visual tower)")
        return load_clip_vision_from(file, found[0], precision=dtypes, device=device)


def preprocess(image: torch.Tensor, size: int, crop: bool = True) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` -> normalised pixel values ``[B, 3, size, size]`` (see the module docstring)."""
    pixels = image[..., :3].movedim(-1, 1).float()
    if pixels.shape[-2:] != (size, size):
        if crop:
            scale = size / min(pixels.shape[-2:])
            target = (round(scale * pixels.shape[-2]), round(scale * pixels.shape[-1]))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
        pixels = pixels[:, :, top:top + size, left:left + size]
    pixels = torch.clip(torch.round(pixels * 255), 0, 255) / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def encode_image(vision: ClipVisionModel, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
    """Encode an IMAGE batch: the last and penultimate hidden states and the projected image embeds (float32)."""
    pixels = preprocess(image, vision.image_size, crop).to(vision.device, vision.dtype)
    with torch.no_grad():
        out = vision.model(pixel_values=pixels, output_hidden_states=True)
    return ClipVisionOutput(out.last_hidden_state.float().cpu(), out.hidden_states[-2].float().cpu(),
                            out.image_embeds.float().cpu())
