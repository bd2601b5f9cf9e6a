"""Checkpoint tools for the command line (``make-checkpoint``, ``inspect-checkpoint``).

A thin pass-through: ``server/`` may import ``nodes`` but not ``diffusion``, so the CLI
reaches the model runtime through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from diffusion.checkpoint import CheckpointError, inspect_checkpoint
from diffusion.precision import PRECISIONS
from diffusion.synthetic import ARCHS as UNET_ARCHS
from diffusion.synthetic import IMAGE_ARCHS, ORIGIN, SIZES, TRANSFORMER_ARCHS, write_checkpoint

#: Every arch ``make-checkpoint`` writes: the UNet families and SD3.5 / Flux.
ARCHS = UNET_ARCHS + TRANSFORMER_ARCHS + IMAGE_ARCHS

#: dtypes a synthetic checkpoint can be written in (``auto`` is not a storage type).
STORAGE_DTYPES = tuple(p for p in PRECISIONS if p != "auto")


def make_checkpoint(out: str | os.PathLike[str], arch: str, size: str = "tiny", seed: int = 0,
                    dtype: str = "fp16") -> Path:
    """Write a seeded random-weight checkpoint (see ``diffusion.synthetic``); returns its path."""
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(dtypes)}")
    return write_checkpoint(out, arch, size, seed, dtypes[dtype])


def describe_checkpoint(path: str | os.PathLike[str], prediction: str | None = None) -> dict[str, Any]:
    """What a checkpoint holds (arch, prediction, UNet/VAE/text encoders, dtype, size), from its header."""
    return inspect_checkpoint(path, prediction)


__all__ = ["ARCHS", "ORIGIN", "SIZES", "STORAGE_DTYPES", "CheckpointError", "describe_checkpoint", "make_checkpoint"]


#: ``noodlebox make-model`` kinds -> ``"module:function"`` of the diffusion/ writer for that kind.
#: A writer is called as ``write(out, base=..., rank=..., seed=..., arch=..., size=...)`` and
#: returns the written path; it writes atomically and with the same bytes for the same seed.
MODEL_KINDS: dict[str, str] = {
    # LoRA-family files for --base (diffusion.lora.synthetic has the layouts).
    "lora": "diffusion.lora.synthetic:write_lora_kohya",
    "locon": "diffusion.lora.synthetic:write_locon",
    "loha": "diffusion.lora.synthetic:write_loha",
    "lokr": "diffusion.lora.synthetic:write_lokr",
    "diffusers-lora": "diffusion.lora.synthetic:write_diffusers_lora",
    # The separate files of SD3.5 / Flux (--arch sd35|flux-dev|flux-schnell).
    "diffusion_model": "diffusion.families.synthetic:write_diffusion_model",
    "clip_l": "diffusion.families.synthetic:write_clip_l",
    "clip_g": "diffusion.families.synthetic:write_clip_g",
    "t5xxl": "diffusion.families.synthetic:write_t5xxl",
    "vae16": "diffusion.families.synthetic:write_vae16",
    # ControlNets and T2I-Adapters for --base (diffusion.control.synthetic has the --arch layouts).
    "controlnet": "diffusion.control.synthetic:write_controlnet",
    "diff-controlnet": "diffusion.control.synthetic:write_diff_controlnet",
    "sd3-controlnet": "diffusion.control.sd3_synthetic:write_sd3_controlnet",
    "union": "diffusion.control.synthetic:write_union_controlnet",
    "t2i-adapter": "diffusion.control.synthetic:write_t2i_adapter",
    "control-lora": "diffusion.control.synthetic:write_control_lora",
    "clip-vision": "diffusion.control.synthetic:write_clip_vision",
    "style": "diffusion.control.synthetic:write_style_model",
    # Image upscalers, 4x (--arch esrgan|esrgan-new|compact).
    "upscale": "diffusion.upscale.synthetic:write_upscale_model",
    # TAESD / TAESDXL preview decoders for models/vae_approx/.
    "taesd": "diffusion.taesd:write_taesd",
    # GLIGEN text-box models for --base (models/gligen/).
    "gligen": "diffusion.gligen:write_gligen",
    # A1111 hypernetworks for --base (models/hypernetworks/, a .pt file).
    "hypernetwork": "diffusion.hypernetwork:write_hypernetwork",
    # PhotoMaker v1 ID encoders for an SDXL --base (models/photomaker/, a .bin pickle).
    "photomaker": "diffusion.photomaker:write_photomaker",
}


def make_model(kind: str, out: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
               rank: int = 4, seed: int = 0, arch: str | None = None, size: str = "tiny") -> Path:
    """Write a seeded random adapter or model of ``kind`` (LoRA, ControlNet, upscaler, ...) in its real layout."""
    import importlib

    target = MODEL_KINDS.get(kind)
    if target is None:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(sorted(MODEL_KINDS))}")
    module_name, _, function = target.partition(":")
    writer = getattr(importlib.import_module(module_name), function)
    return Path(writer(Path(out), base=None if base is None else Path(base), rank=rank, seed=seed, arch=arch,
                       size=size))
