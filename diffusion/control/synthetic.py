"""Seeded random ControlNets and T2I-Adapters in their real single-file layouts (``noodlebox make-model``).

A ControlNet is made for a base checkpoint: its encoder has the base UNet's shapes (the
config derived from the base file's shapes), its hint encoder ControlNet's usual
16/32/96/256 channels. ``arch`` picks the layout: ``ldm`` (default, ``control_model.*``) or
``diffusers``. A "diff" ControlNet is the original layout plus a ``difference`` key, with
the encoder stored as the difference to the base UNet's weights.

A T2I-Adapter's levels follow the base UNet's widths (SD1.x: one feature per level; SDXL:
the 16x-unshuffle XL adapter, which needs SDXL's three levels); without a base, an
SD1.5-shaped adapter at a tenth of the width. ``arch`` is ``full`` (default), ``light`` or
``xl``, with ``-diffusers`` for diffusers' layout.

A union ControlNet (``make-model --kind union``) is a diffusers-layout ControlNet plus the
union parts (``task_embedding``, ``transformer_layes.0``, ``spatial_ch_projs``,
``control_add_embedding``), ``arch`` ``promax`` (8 control types) or ``union`` (6).

Same arguments, same bytes. Weights are written in fp16, atomically.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import ControlNetModel, T2IAdapter

from diffusion import convert
from diffusion.checkpoint import TensorFile
from diffusion.control.load import DIFF_KEY, adapter_to_original
from diffusion.detect import UNET_PREFIX, detect
from diffusion.files import atomic_path
from diffusion.synthetic import ORIGIN, _random_tensor, save_safetensors

StateDict = dict[str, torch.Tensor]
HINT_CHANNELS = (16, 32, 96, 256)
#: Channels of an adapter written without a base (SD1.5's 320/640/1280/1280 divided by 10).
_NO_BASE_CHANNELS = (32, 64, 128, 128)
_CONFIG_KEYS = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
                "transformer_layers_per_block", "attention_head_dim", "use_linear_projection", "upcast_attention",
                "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim")


def _base_unet_config(base: Path | None, what: str) -> tuple[str, dict[str, Any]]:
    if base is None:
        raise ValueError(f"a {what} is made for a checkpoint: give --base")
    with TensorFile(base) as file:
        layout = detect(file.shapes)
    if layout.unet_config is None:
        raise ValueError(f"{base.name} has no UNet to make a {what} for")
    return layout.arch, layout.unet_config


def controlnet_config_for(unet_config: dict[str, Any]) -> dict[str, Any]:
    """A ``ControlNetModel`` config whose encoder matches a UNet config (4 latent channels in)."""
    config = {k: unet_config[k] for k in _CONFIG_KEYS if k in unet_config}
    config["in_channels"] = 4  # inpainting UNets still get 4-channel ControlNets
    config["conditioning_embedding_out_channels"] = list(HINT_CHANNELS)
    return config


def _random_state(module: torch.nn.Module, part: str, seed: int) -> StateDict:
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return {k: _random_tensor(f"{part}.{k}", shape, seed) for k, shape in sorted(shapes.items())}


def controlnet_to_ldm(state: StateDict, config: dict[str, Any]) -> StateDict:
    """diffusers ControlNet weights under the original names (without ``control_model.``)."""
    encoder = [k for k in state if not k.startswith("controlnet_")]
    names = convert.unet_ldm_names(encoder, {**config, "up_block_types": []})
    out = {names[k]: state[k] for k in encoder}
    for key, value in state.items():
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
            out[f"zero_convs.{m[1]}.0.{m[2]}"] = value
        elif key.startswith("controlnet_mid_block."):
            out["middle_block_out.0." + key.removeprefix("controlnet_mid_block.")] = value
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            out["input_hint_block.0." + key.rsplit(".", 1)[1]] = value
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key):
            out[f"input_hint_block.{2 * int(m[1]) + 2}.{m[2]}"] = value
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            last = 2 * (2 * (len(HINT_CHANNELS) - 1)) + 2
            out[f"input_hint_block.{last}.{key.rsplit('.', 1)[1]}"] = value
    return out


def _write(out: Path, tensors: StateDict, kind: str, seed: int, extra: dict[str, str] | None = None) -> Path:
    tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    metadata = {"noodlebox.origin": ORIGIN, "noodlebox.kind": kind, "noodlebox.seed": str(seed), **(extra or {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_safetensors(tensors, tmp, metadata)
    return out


def _controlnet_weights(base: Path | None, seed: int, what: str) -> tuple[str, dict[str, Any], StateDict]:
    arch, unet_config = _base_unet_config(base, what)
    config = controlnet_config_for(unet_config)
    with init_empty_weights():
        module = ControlNetModel(**config)
    return arch, config, _random_state(module, "controlnet", seed)


def write_controlnet(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0, arch: str | None = None,
                     size: str = "tiny") -> Path:
    """A random ControlNet for ``base``; ``arch`` ``ldm`` (default) or ``diffusers`` picks the layout."""
    layout = arch or "ldm"
    if layout not in ("ldm", "diffusers"):
        raise ValueError(f"unknown ControlNet layout {layout!r}; expected ldm or diffusers")
    family, config, state = _controlnet_weights(base, seed, "ControlNet")
    if layout == "ldm":
        state = {"control_model." + k: v for k, v in controlnet_to_ldm(state, config).items()}
    return _write(out, state, "controlnet", seed, {"noodlebox.base_arch": family, "noodlebox.layout": layout})


def write_diff_controlnet(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                          arch: str | None = None, size: str = "tiny") -> Path:
    """A random "diff" ControlNet for ``base``: encoder weights stored as differences to the base UNet's."""
    family, config, state = _controlnet_weights(base, seed, "diff ControlNet")
    ldm = controlnet_to_ldm(state, config)
    assert base is not None
    with TensorFile(base) as file:
        for key in list(ldm):
            unet_key = UNET_PREFIX + key
            if unet_key in file.shapes:
                ldm[key] = ldm[key] - file.get(unet_key, torch.float32)
    tensors = {"control_model." + k: v for k, v in ldm.items()}
    tensors[DIFF_KEY] = torch.zeros(0)
    return _write(out, tensors, "diff-controlnet", seed, {"noodlebox.base_arch": family})


def write_t2i_adapter(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                      arch: str | None = None, size: str = "tiny") -> Path:
    """A random T2I-Adapter (``full``, ``light`` or ``xl``, ``-diffusers`` for that layout) fitting ``base``."""
    variant = arch or "full"
    kind, _, diffusers_layout = variant.partition("-")
    if kind not in ("full", "light", "xl") or diffusers_layout not in ("", "diffusers"):
        raise ValueError(f"unknown T2I-Adapter variant {variant!r}; expected full, light or xl, with -diffusers or not")
    widths = list(_NO_BASE_CHANNELS)
    if base is not None:
        family, unet_config = _base_unet_config(base, "T2I-Adapter")
        widths = list(unet_config["block_out_channels"])
        if family.startswith("sdxl") and kind == "full":
            kind = "xl"
        if kind == "xl":
            if len(widths) != 3:
                raise ValueError("an SDXL T2I-Adapter needs a UNet of three levels (as SDXL's); this one has "
                                 f"{len(widths)}")
            widths = [*widths, widths[-1]]
    if kind == "light":
        if widths[-1] != widths[-2]:
            raise ValueError("a light T2I-Adapter needs a UNet whose last two levels have the same width")
        channels = widths[:-1]
        config = {"in_channels": 3, "channels": channels, "num_res_blocks": 4, "adapter_type": "light_adapter"}
    elif kind == "xl":
        config = {"in_channels": 3, "channels": widths, "num_res_blocks": 2, "downscale_factor": 16,
                  "adapter_type": "full_adapter_xl"}
    else:
        config = {"in_channels": 3, "channels": widths, "num_res_blocks": 2, "adapter_type": "full_adapter"}
    with init_empty_weights():
        module = T2IAdapter(**config)
    state = _random_state(module, "t2i_adapter", seed)
    if not diffusers_layout:
        state = adapter_to_original(state, "light" if kind == "light" else "full")
    return _write(out, state, "t2i-adapter", seed, {"noodlebox.variant": variant})


#: CLIP vision shapes per ``--arch`` (hidden, layers, MLP, projection) at ``small``/``full``; ``tiny`` is 64 wide.
_VISION = {"vit-l": (1024, 24, 4096, 768), "vit-h": (1280, 32, 5120, 1024), "vit-g": (1664, 48, 8192, 1280)}


def write_clip_vision(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0, arch: str | None = None,
                      size: str = "tiny") -> Path:
    """A random CLIP vision encoder (``vit-l`` default, ``vit-h``, ``vit-g``) in transformers' layout."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    variant = arch or "vit-l"
    if variant not in _VISION:
        raise ValueError(f"unknown CLIP vision model {variant!r}; expected one of {', '.join(_VISION)}")
    hidden, layers, mlp, projection = _VISION[variant] if size != "tiny" else (64, 2, 128, 32)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), patch_size=14,
                              image_size=224 if size != "tiny" else 56, projection_dim=projection,
                              hidden_act="quick_gelu" if hidden == 1024 else "gelu")
    with init_empty_weights():
        module = CLIPVisionModelWithProjection(config)
    return _write(out, _random_state(module, "clip_vision", seed), "clip-vision", seed, {"noodlebox.variant": variant})


#: Original-layout key starts of the parts of a ControlNet that are its own (not the model's encoder).
_CONTROL_OWN = ("input_hint_block.", "zero_convs.", "middle_block_out.")


def write_control_lora(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                       arch: str | None = None, size: str = "tiny") -> Path:
    """A random control-LoRA for ``base``: ``up``/``down`` pairs of ``rank`` for the encoder's matrices and kernels."""
    family, config, state = _controlnet_weights(base, seed, "control-LoRA")
    ldm = controlnet_to_ldm(state, config)
    tensors: StateDict = {"lora_controlnet": torch.zeros(0)}
    for key, value in ldm.items():
        if key.startswith(_CONTROL_OWN) or value.ndim < 2 or not key.endswith(".weight"):
            tensors[key] = value
            continue
        stem = key[: -len(".weight")]
        shape_up = (value.shape[0], rank, *([1] * (value.ndim - 2)))
        shape_down = (rank, *value.shape[1:])
        tensors[stem + ".up"] = 0.1 * _random_tensor(stem + ".up", shape_up, seed)
        tensors[stem + ".down"] = _random_tensor(stem + ".down", shape_down, seed)
    return _write(out, tensors, "control-lora", seed, {"noodlebox.base_arch": family, "noodlebox.rank": str(rank)})


def write_style_model(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                      arch: str | None = None, size: str = "tiny") -> Path:
    """A random T2I style adapter; its output width is ``base``'s cross-attention width (else 768, tiny 64)."""
    from diffusion.control.style import StyleAdapter

    width, layers = (64, 2) if size == "tiny" else (1024, 3)
    context = 64 if size == "tiny" else 768
    if base is not None:
        context = int(_base_unet_config(base, "style model")[1]["cross_attention_dim"])
    with init_empty_weights():
        module = StyleAdapter(width, context, layers, 8)
    return _write(out, _random_state(module, "style", seed), "style", seed)


def write_union_controlnet(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                           arch: str | None = None, size: str = "tiny") -> Path:
    """A random union ControlNet (ControlNet++) for ``base`` in the released files' layout (diffusers names).

    ``arch``: ``promax`` (default, 8 control types) or ``union`` (the first release's 6). The union
    parts are as wide as the hint embedding (320 on SDXL, as in the released files).
    """
    from diffusion.control.union import UnionParts

    variant = arch or "promax"
    if variant not in ("promax", "union"):
        raise ValueError(f"unknown union ControlNet variant {variant!r}; expected promax or union")
    family, config, state = _controlnet_weights(base, seed, "union ControlNet")
    width = int(config["block_out_channels"][0])
    if width % 8:
        raise ValueError(f"a union ControlNet needs a first block width divisible by 8 (the base has {width})")
    with init_empty_weights():
        parts = UnionParts(8 if variant == "promax" else 6, width, width * 4)
    state.update(_random_state(parts, "union", seed))
    return _write(out, state, "union-controlnet", seed, {"noodlebox.base_arch": family, "noodlebox.variant": variant})
