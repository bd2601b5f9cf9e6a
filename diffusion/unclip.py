"""SD2.1 unCLIP and SDXL "revision": CLIP image embeddings as the UNet's extra (ADM) input.

What an SD2.1 unCLIP file holds (``sd21-unclip-l`` / ``-h``): an SD2.x UNet whose ``label_emb``
(diffusers' ``class_embedding`` of type ``projection``) reads ``2 x`` the image-embedding width
(1536 for ViT-L, 2048 for ViT-H), the OpenCLIP text encoder and VAE of SD2, a CLIP image encoder
under ``embedder.model.visual.`` (OpenCLIP's layout) and the buffers of the embedding noise
augmentor (``noise_augmentor.*``, a 1000-step ``squaredcos_cap_v2`` schedule; not read, it is
rebuilt here).

The extra input, as ComfyUI builds it from a conditioning entry's ``unclip_conditioning`` list
(one ``{clip_vision_output, strength, noise_augmentation}`` per unCLIPConditioning node):

- each image embedding row ``e`` is noised to level ``l = round(999 * noise_augmentation)``:
  ``sqrt(acp[l]) * e + sqrt(1 - acp[l]) * n``, ``n`` drawn from the sampling seed minus 10
  (``torch.manual_seed``), then ``[noised, timestep_embedding(l)] * strength``;
- with one row in all that is the input; with several, they are summed, and the first half
  of the sum is noised again at the merge level (0.05 for unCLIP models, 0 for SDXL);
- an entry without ``unclip_conditioning`` gets zeros.

SDXL (base and refiner) reads it as "revision": the first ``pooled`` values of the same vector
(augmentor 1280 wide) replace the pooled text output.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers.models.embeddings import get_timestep_embedding

CLIP_VISION_PREFIX = "embedder.model.visual."
NOISE_PREFIX = "noise_augmentor."
#: Noise levels of the augmentor's schedule.
MAX_NOISE_LEVEL = 1000
#: The merge noise level of several unCLIP inputs (ComfyUI's ``unclip_noise_augment_merge`` default).
UNCLIP_MERGE_NOISE = 0.05
#: ComfyUI draws the augmentation noise from the sampling seed minus this.
SEED_OFFSET = 10

StateDict = dict[str, torch.Tensor]


def alphas_cumprod() -> torch.Tensor:
    """The augmentor's ``alphas_cumprod`` (float64): 1000 steps of the ``squaredcos_cap_v2`` schedule."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / MAX_NOISE_LEVEL) / alpha_bar(i / MAX_NOISE_LEVEL), 0.999)
             for i in range(MAX_NOISE_LEVEL)]
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


@lru_cache(maxsize=1)
def noise_schedule() -> tuple[torch.Tensor, torch.Tensor]:
    """``(sqrt(alphas_cumprod), sqrt(1 - alphas_cumprod))``, float32 from float64 maths (as ComfyUI)."""
    cumprod = alphas_cumprod()
    return cumprod.sqrt().float(), (1 - cumprod).sqrt().float()


def noise_level(noise_augmentation: float) -> int:
    """The augmentor level of a 0..1 ``noise_augmentation``."""
    return round((MAX_NOISE_LEVEL - 1) * float(noise_augmentation))


def augment(embeds: torch.Tensor, level: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``embeds`` ([N, D]) noised to ``level`` with noise from ``seed``, and the level's embedding ([1, D])."""
    keep, noise_part = noise_schedule()
    noise = torch.randn(embeds.shape, dtype=embeds.dtype, generator=torch.Generator().manual_seed(seed))
    noised = keep[level].to(embeds.dtype) * embeds + noise_part[level].to(embeds.dtype) * noise
    level_embedding = get_timestep_embedding(torch.tensor([level]), embeds.shape[-1], flip_sin_to_cos=True,
                                             downscale_freq_shift=0)
    return noised, level_embedding


def image_adm(unclip_conditioning: Sequence[Mapping[str, Any]], seed: int, merge_noise: float) -> torch.Tensor:
    """The ``[1, 2 x D]`` extra input of a conditioning entry's ``unclip_conditioning`` list."""
    inputs = []
    for item in unclip_conditioning:
        embeds = item["clip_vision_output"]["image_embeds"].float()
        level = noise_level(item["noise_augmentation"])
        for row in embeds.reshape(-1, embeds.shape[-1]):
            noised, level_embedding = augment(row[None], level, seed - SEED_OFFSET)
            inputs.append(torch.cat([noised, level_embedding], dim=1) * float(item["strength"]))
    if not inputs:
        raise ValueError("unCLIP conditioning without an image embedding")
    if len(inputs) == 1:
        return inputs[0]
    summed = torch.stack(inputs).sum(0)
    width = summed.shape[1] // 2
    noised, level_embedding = augment(summed[:, :width], noise_level(merge_noise), seed - SEED_OFFSET)
    return torch.cat([noised, level_embedding], dim=1)


def unclip_input(options: Mapping[str, Any], adm_channels: int, seed: int) -> torch.Tensor:
    """An unCLIP UNet's ``class_labels`` for one conditioning entry (zeros without image conditioning)."""
    items = options.get("unclip_conditioning")
    if not items:
        return torch.zeros((1, adm_channels))
    adm = image_adm(items, seed, UNCLIP_MERGE_NOISE)
    if adm.shape[1] != adm_channels:
        raise ValueError(f"unCLIPConditioning: the image embedding is {adm.shape[1] // 2} wide; this unCLIP "
                         f"model reads {adm_channels // 2} (a CLIP vision model of another size)")
    return adm


def revision_pooled(options: Mapping[str, Any], width: int, seed: int) -> torch.Tensor | None:
    """SDXL's pooled output from ``unclip_conditioning`` ("revision"), or None when the entry has none."""
    items = options.get("unclip_conditioning")
    if not items:
        return None
    adm = image_adm(items, seed, 0.0)
    if adm.shape[1] // 2 < width:
        raise ValueError(f"unCLIPConditioning: the image embedding is {adm.shape[1] // 2} wide; SDXL's pooled "
                         f"input needs {width} (a ViT-bigG CLIP vision model)")
    return adm[:, :width]


def conditioning(conditioning: Sequence[Sequence[Any]], clip_vision_output: Any, strength: float,
                 noise_augmentation: float) -> list[list[Any]]:
    """``conditioning`` with one more unCLIP image on every entry (unCLIPConditioning)."""
    item = {"clip_vision_output": clip_vision_output, "strength": float(strength),
            "noise_augmentation": float(noise_augmentation)}
    out = []
    for cond, options in conditioning:
        options = dict(options)
        options["unclip_conditioning"] = [*options.get("unclip_conditioning", []), item]
        out.append([cond, options])
    return out


# ----------------------------------------------------------------------------- loading


def load_image_encoder(path: str | os.PathLike[str], *, precision: Any = "auto",
                       device: torch.device | str = "cpu") -> Any | None:
    """The CLIP image encoder a checkpoint carries (``embedder.model.visual.`` in unCLIP files), or None when
    it has none (ComfyUI's unCLIPCheckpointLoader gives an empty CLIP_VISION then)."""
    from diffusion.checkpoint import TensorFile
    from diffusion.control.clip_vision_openclip import find_vision_prefix, load_clip_vision_from

    with TensorFile(path) as file:
        found = find_vision_prefix(list(file.shapes))
        if found is None:
            return None
        return load_clip_vision_from(file, found[0], precision=precision, device=device)


# ----------------------------------------------------------------------------- test checkpoints

#: size -> the CLIP image encoder (hidden, layers, MLP, projection, image size): the projection is the
#: image-embedding width, half the UNet's ADM input. small is ViT-L (sd21-unclip-l), full ViT-H (-h).
_VISION = {"tiny": (64, 2, 128, 32, 56), "small": (1024, 24, 4096, 768, 224), "full": (1280, 32, 5120, 1024, 224)}


def _vision_module(size: str) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, layers, mlp, projection, image = _VISION[size]
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), patch_size=14, image_size=image,
                              projection_dim=projection, hidden_act="quick_gelu" if size == "small" else "gelu")
    with init_empty_weights():
        return CLIPVisionModelWithProjection(config)


def _augmentor_buffers() -> StateDict:
    """The ``noise_augmentor.*`` schedule buffers the published files carry."""
    cumprod = alphas_cumprod()
    previous = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    betas = 1 - cumprod / previous
    buffers = {"betas": betas, "alphas_cumprod": cumprod, "alphas_cumprod_prev": previous,
               "sqrt_alphas_cumprod": cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1 - cumprod).sqrt(),
               "log_one_minus_alphas_cumprod": (1 - cumprod).log(), "sqrt_recip_alphas_cumprod": (1 / cumprod).sqrt(),
               "sqrt_recipm1_alphas_cumprod": (1 / cumprod - 1).sqrt()}
    return {NOISE_PREFIX + k: v.float() for k, v in buffers.items()}


def synthetic_tensors(size: str = "tiny", seed: int = 0) -> StateDict:
    """A seeded random SD2.1 unCLIP checkpoint's tensors (float32) in the published layout."""
    import dataclasses

    from diffusion.control.clip_vision_openclip import transformers_vision_to_openclip
    from diffusion.synthetic import _random_tensor, original_layout, random_weights
    from diffusion.synthetic import synthetic_spec as base_spec

    spec = base_spec("sd2", size)
    width = _VISION[size][3]
    spec = dataclasses.replace(spec, name="sd2-unclip", unet={
        **spec.unet, "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * width})
    out = original_layout(spec, random_weights(spec, seed), seed)
    vision = _vision_module(size)
    shapes = {k: tuple(v.shape) for k, v in vision.state_dict().items()}
    state = {k: _random_tensor(f"clip_vision.{k}", s, seed) for k, s in sorted(shapes.items())}
    out.update(transformers_vision_to_openclip(state, CLIP_VISION_PREFIX))
    out.update(_augmentor_buffers())
    return out


def write_checkpoint(path: str | os.PathLike[str], size: str = "tiny", seed: int = 0,
                     dtype: torch.dtype = torch.float16) -> Path:
    """Write a seeded random SD2.1 unCLIP checkpoint (``make-checkpoint --arch sd2-unclip``), atomically."""
    from diffusion.files import atomic_path
    from diffusion.synthetic import ORIGIN, save_safetensors

    tensors = {k: (v.to(dtype) if not k.startswith(NOISE_PREFIX) else v).contiguous()
               for k, v in synthetic_tensors(size, seed).items()}
    metadata = {"noodlebox.origin": ORIGIN, "noodlebox.arch": "sd2-unclip", "noodlebox.size": size,
                "noodlebox.seed": str(seed), "modelspec.prediction_type": "v"}  # v, as the published files
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata)
    return path
