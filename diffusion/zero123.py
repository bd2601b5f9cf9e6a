"""Stable Zero123: novel views of an object from one image, on an SD1.x UNet.

What the file holds (the layout ComfyUI's ``Stable_Zero123`` reads): an SD1.x UNet with 8
input channels (the noisy latent and the input image's latent) and 768-wide cross-attention,
the VAE under ``first_stage_model.``, a CLIP ViT-L/14 image encoder under
``cond_stage_model.model.visual.`` (OpenCLIP's layout in the published file; transformers'
layout below that prefix in files ComfyUI saves) and ``cc_projection`` (772 -> 768). No text
encoder is used.

Conditioning, as ComfyUI's StableZero123 nodes build it: the image's CLIP embedding
(``[1, images, 768]``) followed by a camera vector per view, ``(-elevation, sin(azimuth),
cos(azimuth), pi/2)`` in radians (Zero123's polar angle is 90 - elevation, taken relative to
90 degrees); the model projects any context that is not 768 wide through ``cc_projection``.
The negative is zeros (768 wide, so it is not projected) with a zero latent. The image latent
goes to the UNet unscaled.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from diffusion.detect import UNET_PREFIX, ZERO123_PROJECTION

CLIP_VISION_PREFIX = "cond_stage_model.model.visual."
#: Zero123's camera vector: elevation, sin and cos of azimuth, and the fixed radius term.
CAMERA_WIDTH = 4

StateDict = dict[str, torch.Tensor]


def camera_embedding(elevation: float, azimuth: float) -> torch.Tensor:
    """The camera vector ``[1, 1, 4]`` for a view at ``elevation`` and ``azimuth`` degrees."""
    elevation_t = torch.as_tensor([float(elevation)])
    azimuth_t = torch.as_tensor([float(azimuth)])
    vector = torch.stack([torch.deg2rad((90 - elevation_t) - 90), torch.sin(torch.deg2rad(azimuth_t)),
                          torch.cos(torch.deg2rad(azimuth_t)), torch.deg2rad(90 - torch.zeros_like(elevation_t))],
                         dim=-1)
    return vector.unsqueeze(1)


def view_angles(elevation: float, azimuth: float, count: int, elevation_step: float = 0.0,
                azimuth_step: float = 0.0) -> list[tuple[float, float]]:
    """``count`` (elevation, azimuth) pairs, each step added to the one before (the batched node's views)."""
    views = []
    for _ in range(count):
        views.append((elevation, azimuth))
        elevation += elevation_step
        azimuth += azimuth_step
    return views


def conditioning(image_embeds: torch.Tensor, latent: torch.Tensor, views: list[tuple[float, float]],
                 batched: bool) -> tuple[list[list[Any]], list[list[Any]]]:
    """Positive and negative CONDITIONING for Stable Zero123.

    ``image_embeds`` is CLIP vision's ``[images, 768]``; ``latent`` the VAE's (unscaled) latent
    of the input image. ``batched`` gives one context per view (``[views, images, 772]``), else
    the first view's camera is appended to every image's token (``[1, images, 772]``).
    """
    pooled = image_embeds.float().unsqueeze(0)
    if batched:
        cameras = torch.cat([camera_embedding(e, a) for e, a in views], dim=0)
        cond = torch.cat([pooled.repeat(len(views), 1, 1)[: len(views)],
                          cameras.expand(-1, pooled.shape[1], -1)], dim=-1)
    else:
        elevation, azimuth = views[0]
        camera = camera_embedding(elevation, azimuth).expand(1, pooled.shape[1], -1)
        cond = torch.cat([pooled, camera], dim=-1)
    positive = [[cond, {"concat_latent_image": latent}]]
    negative = [[torch.zeros_like(pooled), {"concat_latent_image": torch.zeros_like(latent)}]]
    return positive, negative


def projection_from(state: StateDict, device: torch.device) -> torch.nn.Linear:
    """``cc_projection`` from its ``cc_projection.weight`` / ``.bias`` tensors."""
    weight, bias = state[ZERO123_PROJECTION + "weight"], state[ZERO123_PROJECTION + "bias"]
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], device="meta")
    linear.load_state_dict({"weight": weight, "bias": bias}, assign=True)
    return linear.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- loading


def load_image_only(path: str | os.PathLike[str], *, precision: Any = "auto",
                    device: torch.device | str = "cpu") -> tuple[Any, Any, Any]:
    """MODEL, CLIP_VISION and VAE of a single-file image-conditioned checkpoint (Stable Zero123).

    :class:`~diffusion.checkpoint.CheckpointError` with a one-line reason when the file has no
    image encoder under ``cond_stage_model.model.visual.``.
    """
    from diffusion.checkpoint import CheckpointError, TensorFile, load_checkpoint
    from diffusion.control.clip_vision_openclip import load_clip_vision_from
    from diffusion.precision import Precision, resolve_precision

    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    with TensorFile(path) as file:
        if not any(k.startswith(CLIP_VISION_PREFIX) for k in file.shapes):
            raise CheckpointError(f"{file.path.name}: no CLIP vision model in the file "
                                  f"({CLIP_VISION_PREFIX}*); an image-only checkpoint needs one")
        vision = load_clip_vision_from(file, CLIP_VISION_PREFIX, precision=dtypes, device=device)
    loaded = load_checkpoint(path, precision=dtypes, device=device, parts=("unet", "vae"))
    return loaded.unet, vision, loaded.vae


# ----------------------------------------------------------------------------- saving


@contextmanager
def image_only_tensors(unet: Any, clip_vision: Any, vae: Any) -> Iterator[StateDict]:
    """MODEL + CLIP_VISION + VAE under the single-file keys ComfyUI's ImageOnlyCheckpointSave writes (the
    UNet patched, the image encoder in transformers' layout below ``cond_stage_model.model.visual.``), plus
    ``cc_projection`` for a Zero123 model; valid inside the block."""
    from diffusion.save import unet_tensors, vae_tensors

    with ExitStack() as stack:
        tensors: StateDict = dict(stack.enter_context(unet_tensors(unet)))
        projection = unet.context_projection
        if projection is not None:
            tensors.update({ZERO123_PROJECTION + k: v.detach() for k, v in projection.state_dict().items()})
        vision = {k: v for k, v in clip_vision.model.state_dict().items() if not k.endswith("position_ids")}
        tensors.update({CLIP_VISION_PREFIX + k: v.detach() for k, v in vision.items()})
        tensors.update(vae_tensors(vae))
        yield tensors


def save_image_only(path: str | os.PathLike[str], unet: Any, clip_vision: Any, vae: Any,
                    metadata: dict[str, str]) -> Path:
    """Write MODEL + CLIP_VISION + VAE as one ``.safetensors`` checkpoint, atomically."""
    from diffusion.save import write_tensors

    if unet.prediction == "v":
        metadata = {**metadata, "modelspec.prediction_type": "v"}
    with image_only_tensors(unet, clip_vision, vae) as tensors:
        return write_tensors(path, tensors, metadata)


# ----------------------------------------------------------------------------- test checkpoints

#: size -> CLIP vision (hidden, layers, MLP, projection, image size); the projection plus the camera
#: is what cc_projection maps to the UNet's context width. The projection is as wide as the context
#: (as in the real model) so the zero negative is not projected.
_VISION = {"tiny": (64, 2, 128, 64, 56), "small": (1024, 24, 4096, 768, 224), "full": (1024, 24, 4096, 768, 224)}


def _vision_module(size: str) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, layers, mlp, projection, image = _VISION[size]
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), patch_size=14, image_size=image,
                              projection_dim=projection, hidden_act="quick_gelu" if hidden == 1024 else "gelu")
    with init_empty_weights():
        return CLIPVisionModelWithProjection(config)


def synthetic_tensors(size: str = "tiny", seed: int = 0) -> StateDict:
    """A seeded random Stable Zero123 checkpoint's tensors (float32) in the published layout."""
    import dataclasses

    from diffusion import convert
    from diffusion.control.clip_vision_openclip import transformers_vision_to_openclip
    from diffusion.synthetic import _random_tensor, random_weights
    from diffusion.synthetic import synthetic_spec as base_spec

    spec = dataclasses.replace(base_spec("sd15-ip2p", size), name="zero123", text={})
    spec.unet["cross_attention_dim"] = 64 if size == "tiny" else 768
    weights = random_weights(spec, seed)
    out: StateDict = {UNET_PREFIX + k: v for k, v in convert.unet_to_ldm(weights["unet"], spec.unet).items()}
    out.update({"first_stage_model." + k: v for k, v in convert.vae_to_ldm(weights["vae"], spec.vae).items()})
    vision = _vision_module(size)
    shapes = {k: tuple(v.shape) for k, v in vision.state_dict().items()}
    state = {k: _random_tensor(f"clip_vision.{k}", s, seed) for k, s in sorted(shapes.items())}
    out.update(transformers_vision_to_openclip(state, CLIP_VISION_PREFIX))
    width = _VISION[size][3] + CAMERA_WIDTH
    context = spec.unet["cross_attention_dim"]
    out[ZERO123_PROJECTION + "weight"] = _random_tensor("cc_projection.weight", (context, width), seed)
    out[ZERO123_PROJECTION + "bias"] = _random_tensor("cc_projection.bias", (context,), seed)
    return out


def write_checkpoint(path: str | os.PathLike[str], size: str = "tiny", seed: int = 0,
                     dtype: torch.dtype = torch.float16) -> Path:
    """Write a seeded random Stable Zero123 checkpoint (``make-checkpoint --arch zero123``), atomically."""
    from diffusion.files import atomic_path
    from diffusion.synthetic import ORIGIN, save_safetensors

    tensors = {k: v.to(dtype).contiguous() for k, v in synthetic_tensors(size, seed).items()}
    metadata = {"noodlebox.origin": ORIGIN, "noodlebox.arch": "zero123", "noodlebox.size": size,
                "noodlebox.seed": str(seed), "modelspec.prediction_type": "epsilon"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata)
    return path
