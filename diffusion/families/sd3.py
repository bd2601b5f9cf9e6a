"""SD3 and SD3.5 (MMDiT): the facts that are not in the weights, configs from shapes, the key map.

Original (SAI / ComfyUI) single files keep the MMDiT under ``model.diffusion_model.``
(``joint_blocks.N.x_block.attn.qkv.weight``, ...), the text encoders under
``text_encoders.{clip_l,clip_g,t5xxl}.transformer.`` (transformers layout) and the
16-channel VAE under ``first_stage_model.``. A diffusion-model-only file has the MMDiT
keys without a prefix.

Not in the weights, as ComfyUI assumes them: the head width (64, so ``hidden // 64``
heads), flow-matching sampling with shift 3.0 and timestep multiplier 1000, the VAE's
scale 1.5305 and shift 0.0609. In the weights: depth, width, patch size, the
positional-embedding grid, dual attention (SD3.5 medium's ``attn2``) and q/k RMS norms
(SD3.5).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from diffusion.families.keymap import Rule, fused, linear, swapped

PREFIX = "model.diffusion_model."
HEAD_DIM = 64
LATENT_CHANNELS = 16
VAE_SCALE = 1.5305
VAE_SHIFT = 0.0609
#: ModelSamplingSD3's default shift and the timestep multiplier of SD3's flow sampling.
SHIFT = 3.0
MULTIPLIER = 1000.0
#: A key only MMDiT files have (without the prefix).
MARKER = "joint_blocks.0.x_block.attn.qkv.weight"

Shapes = Mapping[str, Sequence[int]]


def _indices(keys: Sequence[str] | Shapes, pattern: str) -> list[int]:
    found = {int(m[1]) for k in keys if (m := re.match(pattern, k))}
    return sorted(found)


def config_from_shapes(shapes: Shapes, prefix: str = PREFIX) -> dict[str, Any]:
    """``SD3Transformer2DModel`` kwargs for the MMDiT whose tensors (under ``prefix``) have these shapes."""
    local = {k[len(prefix) :]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    hidden, in_channels, patch, _ = local["x_embedder.proj.weight"]
    layers = _indices(local, r"joint_blocks\.(\d+)\.")
    out_features = local["final_layer.linear.weight"][0]
    return {
        "sample_size": 128,
        "patch_size": patch,
        "in_channels": in_channels,
        "num_layers": len(layers),
        "attention_head_dim": HEAD_DIM,
        "num_attention_heads": hidden // HEAD_DIM,
        "joint_attention_dim": local["context_embedder.weight"][1],
        "caption_projection_dim": local["context_embedder.weight"][0],
        "pooled_projection_dim": local["y_embedder.mlp.0.weight"][1],
        "out_channels": out_features // (patch * patch),
        "pos_embed_max_size": math.isqrt(local["pos_embed"][1]),
        "dual_attention_layers": tuple(_indices(local, r"joint_blocks\.(\d+)\.x_block\.attn2\.")),
        "qk_norm": "rms_norm" if any(".attn.ln_q." in k for k in local) else None,
    }


def key_rules(config: Mapping[str, Any]) -> list[Rule]:
    """The original <-> diffusers key map of an MMDiT with this config (keys without the prefix)."""
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    qkv = (hidden, hidden, hidden)
    last = config["num_layers"] - 1
    rules = [
        Rule("pos_embed", ("pos_embed.pos_embed",)),
        *linear("x_embedder.proj", "pos_embed.proj"),
        *linear("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
        *linear("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"),
        *linear("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
        *linear("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
        *linear("context_embedder", "context_embedder"),
    ]
    for i in range(config["num_layers"]):
        x, c, d = f"joint_blocks.{i}.x_block", f"joint_blocks.{i}.context_block", f"transformer_blocks.{i}"
        rules += fused(f"{x}.attn.qkv", (f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"), qkv)
        rules += fused(f"{c}.attn.qkv", (f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"), qkv)
        rules += linear(f"{x}.attn.proj", f"{d}.attn.to_out.0")
        rules += linear(f"{x}.adaLN_modulation.1", f"{d}.norm1.linear")
        rules += linear(f"{x}.mlp.fc1", f"{d}.ff.net.0.proj") + linear(f"{x}.mlp.fc2", f"{d}.ff.net.2")
        if config.get("qk_norm"):
            rules += linear(f"{x}.attn.ln_q", f"{d}.attn.norm_q", bias=False)
            rules += linear(f"{x}.attn.ln_k", f"{d}.attn.norm_k", bias=False)
            rules += linear(f"{c}.attn.ln_q", f"{d}.attn.norm_added_q", bias=False)
            rules += linear(f"{c}.attn.ln_k", f"{d}.attn.norm_added_k", bias=False)
        if i in tuple(config.get("dual_attention_layers") or ()):
            rules += fused(f"{x}.attn2.qkv", (f"{d}.attn2.to_q", f"{d}.attn2.to_k", f"{d}.attn2.to_v"), qkv)
            rules += linear(f"{x}.attn2.proj", f"{d}.attn2.to_out.0")
            if config.get("qk_norm"):
                rules += linear(f"{x}.attn2.ln_q", f"{d}.attn2.norm_q", bias=False)
                rules += linear(f"{x}.attn2.ln_k", f"{d}.attn2.norm_k", bias=False)
        if i == last:  # the last context block only feeds the image stream: a (shift, scale) adaLN, no output
            rules += swapped(f"{c}.adaLN_modulation.1", f"{d}.norm1_context.linear")
        else:
            rules += linear(f"{c}.adaLN_modulation.1", f"{d}.norm1_context.linear")
            rules += linear(f"{c}.attn.proj", f"{d}.attn.to_add_out")
            rules += linear(f"{c}.mlp.fc1", f"{d}.ff_context.net.0.proj")
            rules += linear(f"{c}.mlp.fc2", f"{d}.ff_context.net.2")
    rules += linear("final_layer.linear", "proj_out")
    rules += swapped("final_layer.adaLN_modulation.1", "norm_out.linear")
    return rules


def variant(config: Mapping[str, Any]) -> str:
    """``sd35_medium`` (dual attention), ``sd35_large`` (q/k norms) or ``sd3_medium``, as ComfyUI names them."""
    if config.get("dual_attention_layers"):
        return "sd35_medium"
    return "sd35_large" if config.get("qk_norm") else "sd3_medium"
