"""Saving models as single files in the original (LDM) layout: the layout the loader reads, and ComfyUI reads.

Weights are saved with their patches applied (a merged or LoRA'd model is saved as it
samples), cast to the dtype they are held in, and written atomically. ``metadata`` is the
safetensors metadata (ComfyUI stores the prompt and the editor workflow there as JSON).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from diffusion import convert
from diffusion.detect import TEXT_LAYOUTS, UNET_PREFIX
from diffusion.files import atomic_path
from diffusion.models import UNetModel, VAEModel
from diffusion.patching import patched_weights
from diffusion.synthetic import save_safetensors
from diffusion.text import ClipTextEncoder

StateDict = dict[str, torch.Tensor]

#: Where each text-encoder layout's model sits in a ClipTextEncoder (SD2's ViT-H is held as clip_l).
_SLOT = {"clip_l": "clip_l", "clip_h": "clip_l", "clip_g": "clip_g"}


def _detached(state: StateDict) -> StateDict:
    return {k: v.detach() for k, v in state.items()}


@contextmanager
def unet_tensors(unet: UNetModel) -> Iterator[StateDict]:
    """The UNet's patched weights under LDM keys (``model.diffusion_model.*``), valid inside the block."""
    with unet.use() as module:
        ldm = convert.unet_to_ldm(_detached(module.state_dict()), module.config)
        yield {UNET_PREFIX + k: v for k, v in ldm.items()}


def vae_tensors(vae: VAEModel, prefix: str = "first_stage_model.") -> StateDict:
    """The VAE's weights under LDM keys below ``prefix``."""
    module = vae.model
    return {prefix + k: v for k, v in convert.vae_to_ldm(_detached(module.state_dict()), module.config).items()}


@contextmanager
def text_tensors(clip: ClipTextEncoder) -> Iterator[StateDict]:
    """The text encoders' patched weights under the family's single-file keys, valid inside the block."""
    out: StateDict = {}
    with ExitStack() as stack:
        for encoder, (prefix, layout) in TEXT_LAYOUTS[clip.kind].items():
            slot = _SLOT[encoder]
            module = getattr(clip, slot)
            stack.enter_context(patched_weights(module, clip.slot_patches(slot)))
            state = _detached(module.state_dict())
            if layout == "hf":
                mapped = convert.clip_to_ldm(state, module.config.max_position_embeddings)
            else:
                mapped = convert.openclip_to_ldm(state)
            out.update({prefix + k: v for k, v in mapped.items()})
        yield out


def write_tensors(path: str | os.PathLike[str], tensors: StateDict, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` as a ``.safetensors`` file, atomically (no half-written file under ``path``)."""
    path = Path(path)
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_safetensors(contiguous, tmp, metadata)
    return path


def save_checkpoint(path: str | os.PathLike[str], unet: UNetModel | None, clip: ClipTextEncoder | None,
                    vae: VAEModel | None, metadata: dict[str, str]) -> Path:
    """Write a single-file checkpoint with whichever of MODEL, CLIP and VAE are given."""
    with ExitStack() as stack:
        tensors: StateDict = {}
        if unet is not None:
            tensors.update(stack.enter_context(unet_tensors(unet)))
            if unet.prediction == "v":
                metadata = {**metadata, "modelspec.prediction_type": "v"}
        if clip is not None:
            tensors.update(stack.enter_context(text_tensors(clip)))
        if vae is not None:
            tensors.update(vae_tensors(vae))
        return write_tensors(path, tensors, metadata)


def clip_files(clip: ClipTextEncoder) -> Iterator[tuple[str, StateDict]]:
    """Each text encoder of ``clip`` by itself, ``(slot name, transformers-layout weights)``, patches applied."""
    for slot in ("clip_l", "clip_g"):
        module = getattr(clip, slot)
        if module is None:
            continue
        name = "clip_h" if clip.kind == "sd2" else slot
        with patched_weights(module, clip.slot_patches(slot)):
            state = _detached(module.state_dict())
            yield name, {("text_model." + k if not k.startswith(("text_model.", "text_projection")) else k): v
                         for k, v in state.items()}
