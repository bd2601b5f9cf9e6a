"""CLIP vision encoders stored in OpenCLIP's (and OpenAI CLIP's) layout, read as transformers models.

Checkpoints that carry their own image encoder store it the way ``open_clip`` names a
``VisionTransformer``: SD2.1 unCLIP under ``embedder.model.visual.``, SVD under
``conditioner.embedders.0.open_clip.model.visual.``, Zero123 under ``cond_stage_model.model.visual.``,
and open_clip's own ``pytorch_model.bin`` under ``visual.``. The keys below such a prefix:

- ``conv1.weight`` (the patch embedding, no bias), ``class_embedding``, ``positional_embedding``;
- ``ln_pre.*``, ``ln_post.*`` (transformers' ``pre_layrnorm`` and ``post_layernorm``);
- ``transformer.resblocks.N.{ln_1, ln_2, attn.out_proj, mlp.c_fc, mlp.c_proj}.*`` and the fused
  ``attn.in_proj_weight``/``attn.in_proj_bias`` (query, key and value rows, in that order);
- ``proj``, the projection as ``[width, embed]`` (transformers' ``visual_projection.weight`` transposed).

The result loads into ``CLIPVisionModelWithProjection`` with the config read from the shapes
(:func:`diffusion.control.clip_vision.vision_config`); the model kind follows from the width
(1024 ViT-L/14, 1280 ViT-H/14, 1664 ViT-bigG/14).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build
from diffusion.control.clip_vision import ClipVisionModel, vision_config
from diffusion.precision import Precision, resolve_precision

StateDict = dict[str, torch.Tensor]

#: The key (below the prefix) whose presence, with ``conv1.weight`` beside it, marks an OpenCLIP vision tower.
OPENCLIP_PROBE = "transformer.resblocks.0.attn.in_proj_weight"
#: The same for transformers' layout.
TRANSFORMERS_PROBE = "vision_model.embeddings.patch_embedding.weight"
#: Vision-tower prefixes of the checkpoint kinds that carry one, most specific first.
KNOWN_PREFIXES = ("embedder.model.visual.", "conditioner.embedders.0.open_clip.model.visual.",
                  "cond_stage_model.model.visual.", "visual.")
#: The published encoders by width.
VISION_ARCHS = {1024: "vit-l", 1280: "vit-h", 1664: "vit-g"}

_TOP = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}
_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(attn\.in_proj|.+)[._](weight|bias)$")
_HF_BLOCK = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def openclip_vision_to_transformers(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """The OpenCLIP vision tower under ``prefix`` as ``CLIPVisionModelWithProjection`` keys.

    Keys outside ``prefix`` are ignored; a key inside it that has no transformers name is a
    :class:`CheckpointError`.
    """
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest in _TOP:
            out[_TOP[rest]] = value
        elif rest == "proj":
            out["visual_projection.weight"] = value.T.contiguous()
        elif (m := _BLOCK.match(rest)) and (m[2] == "attn.in_proj" or m[2] in _LAYER):
            layer = f"vision_model.encoder.layers.{m[1]}."
            if m[2] == "attn.in_proj":
                for part, rows in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}self_attn.{part}_proj.{m[3]}"] = rows
            else:
                out[f"{layer}{_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise CheckpointError(f"{key!r} is not a key of an OpenCLIP vision encoder")
    return out


def transformers_vision_to_openclip(state: Mapping[str, torch.Tensor], prefix: str = "") -> StateDict:
    """The inverse of :func:`openclip_vision_to_transformers`: transformers keys to OpenCLIP's under ``prefix``."""
    top = {v: k for k, v in _TOP.items()}
    layer_names = {v: k for k, v in _LAYER.items()}
    out: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in top:
            out[prefix + top[key]] = value
        elif key == "visual_projection.weight":
            out[prefix + "proj"] = value.T.contiguous()
        elif (m := _HF_BLOCK.match(key)) and m[2] in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            fused.setdefault(f"{prefix}transformer.resblocks.{m[1]}.attn.in_proj_{m[3]}", {})[m[2][-6]] = value
        elif m and m[2] in layer_names:
            out[f"{prefix}transformer.resblocks.{m[1]}.{layer_names[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for CLIP vision key {key!r}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def find_vision_prefix(keys: Mapping[str, object] | set[str] | list[str]) -> tuple[str, str] | None:
    """``(prefix, layout)`` of a CLIP vision tower among ``keys`` ("openclip" or "transformers"), else None.

    An OpenCLIP text encoder has the same ``transformer.resblocks`` keys, so the OpenCLIP layout
    also needs ``conv1.weight`` under the same prefix.
    """
    names = set(keys)
    for prefix in KNOWN_PREFIXES:
        if prefix + OPENCLIP_PROBE in names and prefix + "conv1.weight" in names:
            return prefix, "openclip"
    for key in sorted(names):
        if key.endswith(OPENCLIP_PROBE):
            prefix = key[: -len(OPENCLIP_PROBE)]
            if prefix + "conv1.weight" in names:
                return prefix, "openclip"
        if key.endswith(TRANSFORMERS_PROBE):
            return key[: -len(TRANSFORMERS_PROBE)], "transformers"
    return None


def vision_arch(width: int) -> str:
    """``vit-l``, ``vit-h`` or ``vit-g`` for a published encoder's width; ``custom`` for any other."""
    return VISION_ARCHS.get(width, "custom")


def load_clip_vision_from(file_or_state: TensorFile | Mapping[str, torch.Tensor], prefix: str, *,
                          precision: str | Precision = "auto", device: torch.device | str = "cpu",
                          name: str | None = None) -> ClipVisionModel:
    """A :class:`ClipVisionModel` from the vision tower under ``prefix`` of an open file or a state dict.

    The tower may be in OpenCLIP's layout (``{prefix}conv1.weight`` ...) or transformers'
    (``{prefix}vision_model.*``). Anything that does not fit is a one-line :class:`CheckpointError`.
    """
    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    if isinstance(file_or_state, TensorFile):
        name = name or file_or_state.path.name
        keys: set[str] = set(file_or_state.shapes)
    else:
        name = name or "CLIP vision"
        keys = set(file_or_state)
    with _as_checkpoint_errors(name):
        if prefix + OPENCLIP_PROBE in keys and prefix + "conv1.weight" in keys:
            raw = _read(file_or_state, prefix, dtypes.text)
            state = openclip_vision_to_transformers(raw, prefix)
        elif prefix + TRANSFORMERS_PROBE in keys:
            raw = _read(file_or_state, prefix, dtypes.text)
            state = {k[len(prefix):]: v for k, v in raw.items() if not k.endswith("position_ids")}
        else:
            raise CheckpointError(f"{name}: no CLIP vision encoder under {prefix or 'the top level'!r}")
        if "visual_projection.weight" not in state:
            raise CheckpointError(f"{name}: the CLIP vision encoder under {prefix!r} has no projection")
        config = vision_config({k: tuple(v.shape) for k, v in state.items()})
        model = _build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**config)), state, "CLIP vision", name)
    return ClipVisionModel(model.to(device), config["image_size"], device, dtypes.text)


def _read(source: TensorFile | Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype) -> StateDict:
    if isinstance(source, TensorFile):
        return source.read(prefix, dtype)
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in source.items() if k.startswith(prefix)}
