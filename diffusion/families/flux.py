"""Flux.1 (dev and schnell): the facts that are not in the weights, configs from shapes, the key map.

Black Forest Labs' files keep the transformer as ``double_blocks.N.img_attn.qkv.weight``,
``single_blocks.N.linear1.weight``, ... (no prefix in the diffusion-model file,
``model.diffusion_model.`` in ComfyUI's all-in-one checkpoints, beside
``text_encoders.{clip_l,t5xxl}.transformer.`` and the 16-channel VAE under
``first_stage_model.``). Dev has a guidance embedder (``guidance_in.*``), schnell none.

diffusers' own converter fixes the width at 3072 when it splits ``linear1``; ours reads
every size from the shapes, so tiny test models convert too. Not in the weights: the MLP
ratio (4, which diffusers also fixes) and the rotary axes (16, 56, 56 for the real 128-wide
heads; scaled for narrower test heads). Sampling: flow matching on sigma itself
(multiplier 1), time shift ``exp(mu)`` with ``mu`` 1.15 for dev and none (1.0) for
schnell; the VAE's scale 0.3611 and shift 0.1159.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from diffusion.families.keymap import Rule, fused, linear, swapped

PREFIX = "model.diffusion_model."
LATENT_CHANNELS = 16
VAE_SCALE = 0.3611
VAE_SHIFT = 0.1159
MLP_RATIO = 4
#: ModelSamplingFlux's defaults: max_shift, base_shift and the token counts they belong to.
MAX_SHIFT = 1.15
BASE_SHIFT = 0.5
BASE_TOKENS = 256
MAX_TOKENS = 4096
#: Flow-matching shift of each variant when no ModelSamplingFlux node sets one.
SHIFT = {"flux_dev": 1.15, "flux_schnell": 1.0}
MULTIPLIER = 1.0
#: Keys only Flux files have (without the prefix).
MARKER = "double_blocks.0.img_attn.qkv.weight"
GUIDANCE_MARKER = "guidance_in.in_layer.weight"

Shapes = Mapping[str, Sequence[int]]


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Rotary axes (index, height, width) for a head width: (16, 56, 56) for Flux's 128."""
    first = head_dim // 8
    rest = (head_dim - first) // 2
    return first, rest, head_dim - first - rest


def config_from_shapes(shapes: Shapes, prefix: str = PREFIX) -> dict[str, Any]:
    """``FluxTransformer2DModel`` kwargs for the transformer whose tensors (under ``prefix``) have these shapes."""
    local = {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    hidden, in_channels = local["img_in.weight"]
    head_dim = local["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": local["final_layer.linear.weight"][0],
        "num_layers": len({int(m[1]) for k in local if (m := re.match(r"double_blocks\.(\d+)\.", k))}),
        "num_single_layers": len({int(m[1]) for k in local if (m := re.match(r"single_blocks\.(\d+)\.", k))}),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": local["txt_in.weight"][1],
        "pooled_projection_dim": local["vector_in.in_layer.weight"][1],
        "guidance_embeds": GUIDANCE_MARKER in local,
        "axes_dims_rope": rope_axes(head_dim),
    }


def key_rules(config: Mapping[str, Any]) -> list[Rule]:
    """The original <-> diffusers key map of a Flux transformer with this config (keys without the prefix)."""
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    qkv = (hidden, hidden, hidden)
    rules = [
        *linear("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
        *linear("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
        *linear("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
        *linear("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
        *linear("txt_in", "context_embedder"),
        *linear("img_in", "x_embedder"),
    ]
    if config.get("guidance_embeds"):
        rules += linear("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1")
        rules += linear("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")
    for i in range(config["num_layers"]):
        o, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        rules += linear(f"{o}.img_mod.lin", f"{d}.norm1.linear")
        rules += linear(f"{o}.txt_mod.lin", f"{d}.norm1_context.linear")
        rules += fused(f"{o}.img_attn.qkv", (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"), qkv)
        context = (f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj")
        rules += fused(f"{o}.txt_attn.qkv", context, qkv)
        rules += [
            Rule(f"{o}.img_attn.norm.query_norm.scale", (f"{d}.attn.norm_q.weight",)),
            Rule(f"{o}.img_attn.norm.key_norm.scale", (f"{d}.attn.norm_k.weight",)),
            Rule(f"{o}.txt_attn.norm.query_norm.scale", (f"{d}.attn.norm_added_q.weight",)),
            Rule(f"{o}.txt_attn.norm.key_norm.scale", (f"{d}.attn.norm_added_k.weight",)),
        ]
        rules += linear(f"{o}.img_attn.proj", f"{d}.attn.to_out.0")
        rules += linear(f"{o}.txt_attn.proj", f"{d}.attn.to_add_out")
        rules += linear(f"{o}.img_mlp.0", f"{d}.ff.net.0.proj") + linear(f"{o}.img_mlp.2", f"{d}.ff.net.2")
        rules += linear(f"{o}.txt_mlp.0", f"{d}.ff_context.net.0.proj")
        rules += linear(f"{o}.txt_mlp.2", f"{d}.ff_context.net.2")
    for i in range(config["num_single_layers"]):
        o, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        rules += linear(f"{o}.modulation.lin", f"{d}.norm.linear")
        parts = (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp")
        rules += fused(f"{o}.linear1", parts, (*qkv, hidden * MLP_RATIO))
        rules += [
            Rule(f"{o}.norm.query_norm.scale", (f"{d}.attn.norm_q.weight",)),
            Rule(f"{o}.norm.key_norm.scale", (f"{d}.attn.norm_k.weight",)),
        ]
        rules += linear(f"{o}.linear2", f"{d}.proj_out")
    rules += linear("final_layer.linear", "proj_out")
    rules += swapped("final_layer.adaLN_modulation.1", "norm_out.linear")
    return rules


def variant(config: Mapping[str, Any]) -> str:
    """``flux_dev`` (guidance-distilled: has a guidance embedder) or ``flux_schnell``."""
    return "flux_dev" if config.get("guidance_embeds") else "flux_schnell"
