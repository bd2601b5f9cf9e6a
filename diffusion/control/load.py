"""Load ControlNets and T2I-Adapters from single files, recognised by their keys and shapes alone.

Layouts read (``prefix`` stripped first):

- ControlNet, original (LDM) layout: ``control_model.`` + ``input_blocks.*``, ``zero_convs.*``,
  ``input_hint_block.*``, ``middle_block_out.*`` (SD1.x, SD2.x, SDXL with ``label_emb``);
  converted with diffusers' ``convert_controlnet_checkpoint``;
- ControlNet, diffusers layout (``controlnet_cond_embedding.*``, ``controlnet_down_blocks.*``);
- SDXL control-LoRAs (``lora_controlnet``): see :mod:`diffusion.control.control_lora`;
- union ControlNets (ControlNet++: diffusers layout plus ``task_embedding``, ``transformer_layes``,
  ``spatial_ch_projs``, ``control_add_embedding``): see :mod:`diffusion.control.union`;
- "diff" ControlNets: the original layout plus a ``difference`` key; their encoder weights are
  differences to the UNet they were made from, so the model's weights are added at load;
- T2I-Adapter, original layout: full (``conv_in``, ``body.N.block1``; two blocks per level) and
  light (``body.N.in_conv``, ``body.N.body.K.block1``); SDXL adapters are the full ones whose
  ``conv_in`` reads 256 or 768 channels (a 16x pixel-unshuffle of 1 or 3 image channels);
- T2I-Adapter, diffusers layout (``adapter.*``).

The configs come from the shapes (no yaml, no hub). Like the UNet loader, attention heads are
not in the weights: 8 for SD1.x, a head dimension of 64 for SD2.x and SDXL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, T2IAdapter
from diffusers.loaders import single_file_utils as sfu

from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build
from diffusion.control.control_lora import MARKER, control_lora_model
from diffusion.control.models import ControlModel
from diffusion.control.union import is_union, split_union, union_parts
from diffusion.detect import ADM_EMBED_DIM, _unet_levels
from diffusion.models import UNetModel
from diffusion.precision import Precision, resolve_precision

Shapes = Mapping[str, tuple[int, ...]]
StateDict = dict[str, torch.Tensor]
CONTROLNET_PREFIXES = ("control_model.", "controlnet.", "")
#: Marker key of a "diff" ControlNet (an empty tensor in real files).
DIFF_KEY = "difference"
#: Blocks per level of an original-layout full T2I-Adapter (fixed in the original code).
FULL_ADAPTER_BLOCKS = 2
#: SDXL's ADM embedding, which diffusers' ControlNet converter leaves out.
_ADM_NAMES = {f"label_emb.0.{i}.{p}": f"add_embedding.linear_{n}.{p}" for i, n in ((0, 1), (2, 2))
              for p in ("weight", "bias")}


def load_control_model(
    path: str | os.PathLike[str],
    *,
    precision: str | Precision = "auto",
    device: torch.device | str = "cpu",
    base: UNetModel | None = None,
) -> ControlModel:
    """Load a ControlNet or T2I-Adapter file; ``base`` is the MODEL a "diff" ControlNet is added to.

    Raises :class:`~diffusion.checkpoint.CheckpointError` with a one-line reason for any file
    that is not a control model we can run.
    """
    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        name = file.path.name
        kind, layout, prefix = detect_control(file.shapes, name)
        raw = {k[len(prefix):]: v for k, v in file.read(prefix, torch.float32).items()}
        if layout == "control-lora":
            return control_lora_model({k: v.to(dtypes.unet) for k, v in raw.items()}, name, dtypes.unet, device)
        if kind == "controlnet":
            model = _load_controlnet(raw, layout, name, dtypes.unet, device, base)
            model.global_pool = Path(name).stem.removesuffix("_fp16").endswith("_shuffle")
            return model
        return _load_adapter(raw, layout, name, dtypes.unet, device)


def detect_control(shapes: Shapes, name: str = "file") -> tuple[str, str, str]:
    """(kind, layout, key prefix) of a control-model file: ``controlnet``/``t2i_adapter`` and the layout name."""
    keys = set(shapes)
    if MARKER in keys:
        return "controlnet", "control-lora", ""
    if is_union(keys):
        if "controlnet_cond_embedding.conv_in.weight" not in keys:
            raise CheckpointError(f"{name}: a union (ControlNet++) model in a layout other than diffusers'")
        return "controlnet", "union", ""
    for prefix in CONTROLNET_PREFIXES:
        if prefix + "input_hint_block.0.weight" in keys:
            return "controlnet", "diff" if DIFF_KEY in keys else "ldm", prefix
        if prefix + "controlnet_cond_embedding.conv_in.weight" in keys:
            return "controlnet", "diffusers", prefix
    if "adapter.conv_in.weight" in keys:
        return "t2i_adapter", "full-diffusers", ""
    if "adapter.body.0.out_conv.weight" in keys:
        return "t2i_adapter", "light-diffusers", ""
    if "conv_in.weight" in keys and "body.0.block1.weight" in keys:
        return "t2i_adapter", "full", ""
    if "body.0.in_conv.weight" in keys and "body.0.body.0.block1.weight" in keys:
        return "t2i_adapter", "light", ""
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise CheckpointError(f"{name}: this is a checkpoint, not a ControlNet or T2I-Adapter")
    raise CheckpointError(f"{name}: not a ControlNet or T2I-Adapter (no input_hint_block, controlnet_cond_embedding "
                          "or adapter keys)")


# -- ControlNet ---------------------------------------------------------------------------------------


def _load_controlnet(raw: StateDict, layout: str, name: str, dtype: torch.dtype, device: torch.device,
                     base: UNetModel | None) -> ControlModel:
    if layout in ("ldm", "diff"):
        shapes = {k: tuple(v.shape) for k, v in raw.items()}
        levels = _unet_levels(shapes, "")
        state = sfu.convert_controlnet_checkpoint({k: v for k, v in raw.items() if k != DIFF_KEY},
                                                  {"layers_per_block": len(levels[0])})
        for ldm_name, new_name in _ADM_NAMES.items():
            if ldm_name in raw:
                state[new_name] = raw[ldm_name]
        dropped = len([k for k in raw if k != DIFF_KEY]) - len(state)
        if dropped:
            raise CheckpointError(f"{name}: {dropped} ControlNet weights have no place in a diffusers ControlNet")
    else:
        state = dict(raw)
    union = None
    if layout == "union":
        state, own = split_union(state)
        try:
            union = union_parts(own, dtype, device)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{name}: {exc}") from None
    config = controlnet_config({k: tuple(v.shape) for k, v in state.items()})
    arch = config.pop("_arch")
    if layout == "diff":
        if base is None:
            raise CheckpointError(f"{name}: a diff ControlNet needs the model it was made from (DiffControlNetLoader)")
        _add_base_weights(state, base, name)
    state = {k: v.to(dtype) for k, v in state.items()}
    module = _build(lambda: ControlNetModel(**config), state, "ControlNet", name).to(device)
    return ControlModel("controlnet", module, arch, tuple(config["block_out_channels"]),
                        config["cross_attention_dim"], device, dtype, config["conditioning_channels"], 8, layout,
                        union=union)


def _indices(keys: Any, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def controlnet_config(shapes: Shapes) -> dict[str, Any]:
    """A diffusers ``ControlNetModel`` config for diffusers-layout weights (plus ``_arch``: sd1, sd2 or sdxl)."""
    levels = _indices(shapes, r"down_blocks\.(\d+)\.")
    channels, depths = [], []
    for level in levels:
        channels.append(shapes[f"down_blocks.{level}.resnets.0.conv2.weight"][0])
        depths.append(len(_indices(shapes, rf"down_blocks\.{level}\.attentions\.0\.transformer_blocks\.(\d+)\.")))
    per_level = len(_indices(shapes, r"down_blocks\.0\.resnets\.(\d+)\."))
    mid = len(_indices(shapes, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    context = next(s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight"))
    linear = any(len(s) == 2 for k, s in shapes.items() if k.endswith(".proj_in.weight"))
    adm = shapes.get("add_embedding.linear_1.weight")
    arch = "sdxl" if adm is not None else "sd2" if linear else "sd1"
    hint = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    hint += [shapes[f"controlnet_cond_embedding.blocks.{i}.weight"][0]
             for i in _indices(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.") if i % 2 == 1]
    config: dict[str, Any] = {
        "in_channels": shapes["conv_in.weight"][1],
        "conditioning_channels": shapes["controlnet_cond_embedding.conv_in.weight"][1],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "block_out_channels": channels,
        "layers_per_block": per_level,
        "cross_attention_dim": context,
        "transformer_layers_per_block": [d or 1 for d in depths[:-1]] + [mid],
        "attention_head_dim": 8 if arch == "sd1" else [max(1, c // 64) for c in channels],
        "use_linear_projection": linear,
        "upcast_attention": arch == "sd2",
        "conditioning_embedding_out_channels": hint,
    }
    if adm is not None:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=ADM_EMBED_DIM,
                      projection_class_embeddings_input_dim=adm[1])
    return {**config, "_arch": arch}


def _add_base_weights(state: StateDict, base: UNetModel, name: str) -> None:
    """A diff ControlNet's encoder weights plus the model's own (as the model is now, with its weight patches)."""
    with base.use() as module:
        unet_state = module.state_dict()
        matched = 0
        for key, value in state.items():
            if key in unet_state:
                if unet_state[key].shape != value.shape:
                    raise CheckpointError(f"{name}: the diff ControlNet does not fit this model ({key} differs)")
                state[key] = value + unet_state[key].float()
                matched += 1
    if matched == 0:
        raise CheckpointError(f"{name}: the diff ControlNet shares no weights with this model")


# -- T2I-Adapter --------------------------------------------------------------------------------------


def _load_adapter(raw: StateDict, layout: str, name: str, dtype: torch.dtype, device: torch.device) -> ControlModel:
    state = raw if layout.endswith("-diffusers") else adapter_to_diffusers(raw, layout)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    config = adapter_config(shapes)
    if any(".down_opt." in k for k in raw):
        raise CheckpointError(f"{name}: T2I-Adapters with convolution downsampling (down_opt) are not supported")
    state = {k: v.to(dtype) for k, v in state.items()}
    module = _build(lambda: T2IAdapter(**config), state, "T2I-Adapter", name).to(device)
    channels = list(config["channels"])
    features = [*channels, channels[-1]] if config["adapter_type"] == "light_adapter" else channels
    xl = config["adapter_type"] == "full_adapter_xl"
    levels = tuple(features[:-1] if xl else features)
    return ControlModel("t2i_adapter", module, "sdxl" if xl else "sd1", levels, None, device, dtype,
                        config["in_channels"], config["downscale_factor"], layout)


def adapter_config(shapes: Shapes) -> dict[str, Any]:
    """A diffusers ``T2IAdapter`` config for diffusers-layout adapter weights."""
    blocks = _indices(shapes, r"adapter\.body\.(\d+)\.")
    res = len(_indices(shapes, r"adapter\.body\.0\.resnets\.(\d+)\."))
    if "adapter.conv_in.weight" in shapes:
        cin = shapes["adapter.conv_in.weight"][1]
        xl = cin in (256, 768)
        factor = 16 if xl else 8
        channels = [shapes[f"adapter.body.{i}.resnets.0.block1.weight"][0] for i in blocks]
        kind = "full_adapter_xl" if xl else "full_adapter"
    else:
        cin = shapes["adapter.body.0.in_conv.weight"][1]
        factor = 8
        channels = [shapes[f"adapter.body.{i}.out_conv.weight"][0] for i in blocks[:-1]]
        kind = "light_adapter"
    return {"in_channels": cin // factor**2, "channels": channels, "num_res_blocks": res,
            "downscale_factor": factor, "adapter_type": kind}


def adapter_to_diffusers(raw: Mapping[str, torch.Tensor], layout: str) -> StateDict:
    """Original-layout T2I-Adapter weights (``full`` or ``light``) under diffusers' names."""
    out: StateDict = {}
    for key, value in raw.items():
        if key == "conv_in.weight" or key == "conv_in.bias":
            out["adapter." + key] = value
            continue
        if layout == "full":
            m = re.match(r"body\.(\d+)\.(block1|block2|in_conv|down_opt)\.(.*)", key)
            if m is None:
                raise CheckpointError(f"unexpected T2I-Adapter key {key!r}")
            n, part, rest = int(m[1]), m[2], m[3]
            level, j = divmod(n, FULL_ADAPTER_BLOCKS)
            if part in ("block1", "block2"):
                out[f"adapter.body.{level}.resnets.{j}.{part}.{rest}"] = value
            else:
                out[f"adapter.body.{level}.{part}.{rest}"] = value
        else:
            m = re.match(r"body\.(\d+)\.(?:body\.(\d+)\.)?(.*)", key)
            if m is None:
                raise CheckpointError(f"unexpected T2I-Adapter key {key!r}")
            inner = f"resnets.{m[2]}." if m[2] is not None else ""
            out[f"adapter.body.{m[1]}.{inner}{m[3]}"] = value
    return out


def adapter_to_original(state: Mapping[str, torch.Tensor], layout: str) -> StateDict:
    """diffusers T2I-Adapter weights under the original names (``full`` or ``light``); inverse of the above."""
    out: StateDict = {}
    for key, value in state.items():
        rest = key.removeprefix("adapter.")
        if layout == "full" and (m := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.*)", rest)):
            rest = f"body.{int(m[1]) * FULL_ADAPTER_BLOCKS + int(m[2])}.{m[3]}"
        elif layout == "full" and (m := re.match(r"body\.(\d+)\.(in_conv\..*)", rest)):
            rest = f"body.{int(m[1]) * FULL_ADAPTER_BLOCKS}.{m[2]}"
        elif layout == "light":
            rest = re.sub(r"^body\.(\d+)\.resnets\.(\d+)\.", r"body.\1.body.\2.", rest)
        out[rest] = value
    return out
