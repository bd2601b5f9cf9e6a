"""Key mapping between the original single-file (LDM) layout and diffusers / transformers.

LDM -> diffusers uses ``diffusers.loaders.single_file_utils``'s converters with configs we
derived ourselves (``diffusion.detect``). The other direction exists nowhere installed, so
it is written here; the synthetic test checkpoints use it, and round-trip tests check that
the two directions agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import torch
from diffusers.loaders import single_file_utils as sfu

StateDict = dict[str, torch.Tensor]

# --------------------------------------------------------------------------- LDM -> diffusers


def unet_to_diffusers(ldm: Mapping[str, torch.Tensor], config: dict[str, Any]) -> StateDict:
    """UNet weights (keys under ``model.diffusion_model.``) to ``UNet2DConditionModel`` keys."""
    return sfu.convert_ldm_unet_checkpoint(dict(ldm), config)


def vae_to_diffusers(ldm: Mapping[str, torch.Tensor], config: dict[str, Any]) -> StateDict:
    """VAE weights (keys under ``first_stage_model.``, ``vae.`` or none) to ``AutoencoderKL`` keys."""
    return sfu.convert_ldm_vae_checkpoint(dict(ldm), config)


def clip_to_transformers(ldm: Mapping[str, torch.Tensor], prefix: str, with_projection: bool) -> StateDict:
    """A CLIP-L text encoder stored in the transformers layout under ``prefix``.

    transformers >= 5.6 names ``CLIPTextModel``'s weights without the ``text_model.``
    prefix (``CLIPTextModelWithProjection`` keeps it), and no longer stores ``position_ids``.
    """
    converted = sfu.convert_ldm_clip_checkpoint(dict(ldm), remove_prefix=prefix)
    out: StateDict = {}
    for key, value in converted.items():
        if key.endswith("position_ids"):
            continue
        if not key.startswith("text_model.") and not key.startswith("text_projection"):
            key = "text_model." + key  # very old files stored the encoder without text_model.
        if not with_projection:
            if key.startswith("text_projection"):
                continue
            key = key.removeprefix("text_model.")
        out[key] = value
    return out


def openclip_to_transformers(
    ldm: Mapping[str, torch.Tensor], prefix: str, hidden_size: int, with_projection: bool
) -> StateDict:
    """An OpenCLIP text encoder (SD2's ViT-H, SDXL's bigG) under ``prefix`` to transformers keys.

    The keys are moved under a private prefix first: diffusers drops SD2's last layer when
    it sees ``cond_stage_model.model.``, and we keep every layer (ComfyUI's clip skip needs them).
    """
    private = "openclip."
    moved = {private + k[len(prefix) :]: v for k, v in ldm.items() if k.startswith(prefix)}
    text_model = SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size))
    converted = sfu.convert_open_clip_checkpoint(text_model, moved, prefix=private)
    if with_projection:
        return converted
    return {k.removeprefix("text_model."): v for k, v in converted.items() if not k.startswith("text_projection")}


# --------------------------------------------------------------------------- diffusers -> LDM

_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP_TO_LDM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",  # SD2.1 unCLIP's image-embedding input
    "class_embedding.linear_2": "label_emb.0.2",
    "class_embedding": "label_emb",  # the x4 upscaler's noise-level embedding (an nn.Embedding)
}


def _resnet_key(rest: str) -> str:
    layer, _, tail = rest.partition(".")
    return f"{_RESNET_TO_LDM[layer]}.{tail}"


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: dict[str, Any]) -> StateDict:
    """``UNet2DConditionModel`` weights to LDM keys (without the ``model.diffusion_model.`` prefix)."""
    names = unet_ldm_names(state, config)
    return {names[key]: value for key, value in state.items()}


def unet_ldm_names(keys: Iterable[str], config: Mapping[str, Any]) -> dict[str, str]:
    """``{diffusers UNet key: LDM key}`` (without ``model.diffusion_model.``) for the given keys."""
    per_level = config["layers_per_block"]
    up_has_attention = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    return {key: _unet_key_to_ldm(key, per_level, up_has_attention) for key in keys}


def _unet_key_to_ldm(key: str, per_level: int, up_has_attention: list[bool]) -> str:
    for diffusers_name, ldm_name in _UNET_TOP_TO_LDM.items():
        if key.startswith(diffusers_name + "."):
            return ldm_name + key[len(diffusers_name) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        first = 1 + level * (per_level + 1)
        if kind == "resnets":
            return f"input_blocks.{first + j}.0.{_resnet_key(rest)}"
        if kind == "attentions":
            return f"input_blocks.{first + j}.1.{rest}"
        return f"input_blocks.{first + per_level}.0.op.{rest.removeprefix('conv.')}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return f"middle_block.{2 * j}.{_resnet_key(rest)}"
        return f"middle_block.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        first = level * (per_level + 1)
        if kind == "resnets":
            return f"output_blocks.{first + j}.0.{_resnet_key(rest)}"
        if kind == "attentions":
            return f"output_blocks.{first + j}.1.{rest}"
        slot = 2 if up_has_attention[level] else 1
        return f"output_blocks.{first + per_level}.{slot}.{rest}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: dict[str, Any]) -> StateDict:
    """``AutoencoderKL`` weights to LDM keys (without the ``first_stage_model.`` prefix).

    Attention projections become 1x1 convolutions, as the original files store them.
    """
    levels = len(config["block_out_channels"])
    out: StateDict = {}
    for key, value in state.items():
        new_key = _vae_key_to_ldm(key, levels)
        if ".mid.attn_1." in new_key and new_key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new_key] = value
    return out


def _vae_key_to_ldm(key: str, levels: int) -> str:
    key = key.replace("conv_norm_out", "norm_out")
    if m := re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
        part, kind, j, rest = m[1], m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"{part}.mid.block_{j + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        layer, _, tail = rest.rpartition(".")
        return f"{part}.mid.attn_1.{_VAE_ATTENTION_TO_LDM[layer]}.{tail}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"encoder.down.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"encoder.down.{level}.downsample.{rest}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", key):
        level, kind, j, rest = levels - 1 - int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"decoder.up.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"decoder.up.{level}.upsample.{rest}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def clip_to_ldm(state: Mapping[str, torch.Tensor], max_positions: int) -> StateDict:
    """A transformers CLIP text model to the single-file layout below ``...transformer.``.

    ``position_ids`` is added because real SD1.5 and SDXL files carry it.
    """
    out = {"text_model." + k.removeprefix("text_model."): v for k, v in state.items()}
    out["text_model.embeddings.position_ids"] = torch.arange(max_positions, dtype=torch.int64)[None]
    return out


_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def openclip_to_ldm(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A transformers CLIP text model to OpenCLIP's layout (q/k/v fused, projection transposed)."""
    flat = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: StateDict = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        if key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.rpartition(".")[2]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)$", key):
            block, layer, kind = f"transformer.resblocks.{m[1]}", m[2], m[3]
            if layer in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{block}.attn.in_proj_{kind}", {})[layer[-6]] = value
            elif layer == "self_attn.out_proj":
                out[f"{block}.attn.out_proj.{kind}"] = value
            else:
                out[f"{block}.{_OPENCLIP_LAYER[layer]}.{kind}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for text-encoder key {key!r}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
