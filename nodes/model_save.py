"""Saving nodes: checkpoints, text encoders, VAEs and diffusion models as single files in ``output/``.

Files are named as ComfyUI names them (``<prefix>_<5-digit counter>_.safetensors``, the
subfolder taken from the prefix), written atomically, with the prompt and the editor
workflow in the safetensors metadata as JSON, as ComfyUI stores them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from .api import REQUIRED, Clip, Context, ExtraPngInfo, HiddenPrompt, Input, Model, OneOf, Range, Vae, node
from .save_paths import model_file

_CATEGORY = "advanced/model_merging"


def _metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if prompt is not None:
        metadata["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        metadata[str(key)] = json.dumps(value)
    return metadata


def _target(ctx: Context, prefix: str, suffix: str = "") -> Path:
    return model_file(ctx.folders.output_dir, prefix, suffix)


@node(category=_CATEGORY, display_name="Save Checkpoint", output_node=True)
def CheckpointSave(model: Model, clip: Clip, vae: Vae, filename_prefix: str = "checkpoints/ComfyUI",
                   prompt: HiddenPrompt = None, extra_pnginfo: ExtraPngInfo = None, *, ctx: Context) -> None:
    """Saves the model, text encoder and VAE (with their patches: LoRAs, merges) as one checkpoint file."""
    from diffusion.save import save_checkpoint

    save_checkpoint(_target(ctx, filename_prefix), model, clip, vae, _metadata(prompt, extra_pnginfo))


@node(category=_CATEGORY, output_node=True)
def ModelSave(model: Model, filename_prefix: str = "diffusion_models/ComfyUI", prompt: HiddenPrompt = None,
              extra_pnginfo: ExtraPngInfo = None, *, ctx: Context) -> None:
    """Saves the diffusion model alone (with its patches), under the checkpoint's ``model.diffusion_model.`` keys."""
    from diffusion.save import save_checkpoint

    save_checkpoint(_target(ctx, filename_prefix), model, None, None, _metadata(prompt, extra_pnginfo))


@node(category=_CATEGORY, output_node=True)
def VAESave(vae: Vae, filename_prefix: str = "vae/ComfyUI_vae", prompt: HiddenPrompt = None,
            extra_pnginfo: ExtraPngInfo = None, *, ctx: Context) -> None:
    """Saves the VAE as a separate file in the original layout (loadable with Load VAE)."""
    from diffusion.save import vae_tensors, write_tensors

    write_tensors(_target(ctx, filename_prefix), vae_tensors(vae, prefix=""), _metadata(prompt, extra_pnginfo))


@node(category=_CATEGORY, output_node=True)
def CLIPSave(clip: Clip, filename_prefix: str = "clip/ComfyUI", prompt: HiddenPrompt = None,
             extra_pnginfo: ExtraPngInfo = None, *, ctx: Context) -> None:
    """Saves each text encoder (with its patches) as its own file, named after it (``..._clip_l_00001_``)."""
    from diffusion.save import clip_files, write_tensors

    metadata = _metadata(prompt, extra_pnginfo)
    for name, tensors in clip_files(clip):
        write_tensors(_target(ctx, filename_prefix, f"_{name}"), tensors, metadata)


@node(category="_for_testing", display_name="Extract and Save Lora", output_node=True)
def LoraSave(
    filename_prefix: Annotated[str, Input(multiline=False)] = "loras/ComfyUI_extracted_lora",
    rank: Annotated[int, Range(1, 4096, step=1)] = 8,
    lora_type: Annotated[str, OneOf(("standard", "full_diff"), v3=True)] = REQUIRED,
    bias_diff: bool = True,
    model_diff: Model | None = None,
    text_encoder_diff: Clip | None = None,
    *,
    ctx: Context,
) -> None:
    """Extracts a LoRA from model differences (e.g. ModelMergeSubtract of a fine-tune and its base) and saves it."""
    from diffusion.lora_extract import extract_clip_lora, extract_unet_lora
    from diffusion.save import write_tensors

    if model_diff is None and text_encoder_diff is None:
        return
    tensors = {}
    if model_diff is not None:
        tensors.update(extract_unet_lora(model_diff, rank, lora_type, bias_diff))
    if text_encoder_diff is not None:
        tensors.update(extract_clip_lora(text_encoder_diff, rank, lora_type, bias_diff))
    write_tensors(_target(ctx, filename_prefix), tensors, {})
