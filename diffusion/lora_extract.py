"""Extracting a LoRA from a model difference (ComfyUI's LoraSave): SVD per weight, kohya key names.

The input is a MODEL (and/or CLIP) whose patched weights *are* a difference, as
``ModelMergeSubtract(finetuned, base)`` makes one. Each matrix (and each convolution, as a
matrix of its flattened input) is cut to its best rank-``r`` approximation
``up @ down`` (``up = U S``, ``down = Vh``, alpha = rank so the scale is 1); with
``full_diff`` the whole difference is stored as ``.diff``. One-dimensional weights and biases
become ``.diff`` / ``.diff_b`` entries when ``bias_diff`` is on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from diffusion.convert import unet_ldm_names
from diffusion.models import UNetModel
from diffusion.patching import patched_weights
from diffusion.text import ClipTextEncoder

StateDict = dict[str, torch.Tensor]
LORA_TYPES = ("standard", "full_diff")


def low_rank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up, down)`` with ``up @ down`` the best rank-``rank`` approximation of ``weight`` (conv: [out, in*k*k])."""
    matrix = weight.float().reshape(weight.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    r = min(rank, s.shape[0])
    up, down = u[:, :r] * s[:r], vh[:r]
    if weight.ndim == 4:
        return up[:, :, None, None], down.reshape(r, *weight.shape[1:])
    return up, down


def _entries(stem: str, key: str, value: torch.Tensor, rank: int, lora_type: str, bias_diff: bool,
             dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    value = value.detach()
    if value.ndim >= 2 and key.endswith(".weight"):
        if lora_type == "full_diff":
            yield f"{stem}.diff", value.to(dtype).contiguous()
            return
        up, down = low_rank(value, rank)
        yield f"{stem}.lora_up.weight", up.to(dtype).contiguous()
        yield f"{stem}.lora_down.weight", down.to(dtype).contiguous()
        yield f"{stem}.alpha", torch.tensor(float(up.shape[1]), dtype=dtype)
    elif bias_diff and value.ndim == 1:
        suffix = "diff_b" if key.endswith(".bias") else "diff"
        yield f"{stem}.{suffix}", value.to(dtype).contiguous()


def _stem(prefix: str, name: str) -> str:
    return prefix + name.rpartition(".")[0].replace(".", "_")


def _module_entries(module: nn.Module, names: Mapping[str, str], prefix: str, rank: int, lora_type: str,
                    bias_diff: bool) -> StateDict:
    out: StateDict = {}
    for key, value in module.state_dict().items():
        if key in names and value.is_floating_point():
            out.update(_entries(_stem(prefix, names[key]), key, value, rank, lora_type, bias_diff, value.dtype))
    return out


def extract_unet_lora(model: UNetModel, rank: int, lora_type: str = "standard", bias_diff: bool = True) -> StateDict:
    """The kohya ``lora_unet_*`` entries of ``model``'s patched weights."""
    with model.use() as module:
        keys = [k for k, _ in module.named_parameters()]
        return _module_entries(module, unet_ldm_names(keys, module.config), "lora_unet_", rank, lora_type, bias_diff)


def extract_clip_lora(clip: ClipTextEncoder, rank: int, lora_type: str = "standard",
                      bias_diff: bool = True) -> StateDict:
    """The kohya ``lora_te_*`` (SDXL: ``lora_te1_*`` / ``lora_te2_*``) entries of ``clip``'s patched weights."""
    out: StateDict = {}
    slots = [s for s in ("clip_l", "clip_g") if getattr(clip, s) is not None]
    for index, slot in enumerate(slots, start=1):
        prefix = "lora_te_" if len(slots) == 1 else f"lora_te{index}_"
        module = getattr(clip, slot)
        with patched_weights(module, clip.slot_patches(slot)):
            names = {k: "text_model." + k.removeprefix("text_model.") for k, _ in module.named_parameters()
                     if not k.startswith("text_projection")}
            out.update(_module_entries(module, names, prefix, rank, lora_type, bias_diff))
    return out
