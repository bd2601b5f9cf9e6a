"""Recognise a Stable Diffusion checkpoint and derive its model configs from key names and shapes alone.

No yaml, no hub: everything comes from the original single-file (LDM) layout, so models of
non-standard size (a toy model with 32 base channels) are described as well as real ones.

What the weights do not say, and the rule used instead:

- attention heads: SD1.x uses 8 heads per block; SD2.x and SDXL a head dimension of 64
  (``max(1, channels // 64)`` heads, so toy models narrower than 64 get one head);
- GroupNorm groups: 32 (UNet and VAE); channel counts must be multiples of 32;
- SDXL's size/crop embeddings: 256 wide each (6 for the base, 5 for the refiner);
- text encoders: head dimension 64; CLIP-L uses quick-gelu, OpenCLIP (SD2, bigG) gelu;
- prediction type (eps / v): see ``diffusion.checkpoint.resolve_prediction``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

Shapes = Mapping[str, tuple[int, ...]]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.", "")

#: Where each family keeps its text encoders: name -> (prefix, layout). "hf" is the
#: transformers layout (``text_model.*``), "openclip" OpenCLIP's (``transformer.resblocks.*``).
TEXT_LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "sd1": {"clip_l": ("cond_stage_model.transformer.", "hf")},
    "sd2": {"clip_h": ("cond_stage_model.model.", "openclip")},
    "sdxl": {
        "clip_l": ("conditioner.embedders.0.transformer.", "hf"),
        "clip_g": ("conditioner.embedders.1.model.", "openclip"),
    },
    "sdxl_refiner": {"clip_g": ("conditioner.embedders.0.model.", "openclip")},
}

#: Pooled text width + this many 256-wide size embeddings = the ADM input width.
ADM_SIZE_EMBEDDINGS = {"sdxl": 6, "sdxl_refiner": 5}
ADM_EMBED_DIM = 256
#: Stable Zero123's image-embedding projection (772 -> 768), a top-level key beside the UNet.
ZERO123_PROJECTION = "cc_projection."
#: Input channels of the SD x4 upscaler's UNet (latent + the low-resolution RGB image).
X4_UPSCALER_CHANNELS = 7


class DetectionError(ValueError):
    """The keys and shapes do not describe a model we know (the message says why, in one line)."""


@dataclass
class TextEncoderSpec:
    """One text encoder: where it is in the file and its transformers ``CLIPTextConfig`` arguments."""

    name: str
    prefix: str
    layout: str
    config: dict[str, Any]
    params: int


@dataclass
class CheckpointLayout:
    """What a checkpoint holds, derived from its shapes."""

    arch: str
    unet_config: dict[str, Any] | None
    vae_config: dict[str, Any] | None
    vae_prefix: str | None
    text_encoders: list[TextEncoderSpec] = field(default_factory=list)
    unet_params: int = 0
    vae_params: int = 0
    adm_channels: int | None = None
    #: A model kind with its own conditioning: ``zero123``, ``x4_upscaler`` (see :func:`model_variant`), else None.
    variant: str | None = None

    @property
    def inpaint(self) -> bool:
        """True if the UNet takes 9 input channels (latent + mask + masked-image latent)."""
        return bool(self.unet_config) and self.unet_config["in_channels"] == 9


def _params(shapes: Shapes, prefix: str) -> int:
    return sum(prod(s) for k, s in shapes.items() if k.startswith(prefix))


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (a regex with one group) over the keys."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def _has_prefix(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def _need(shapes: Shapes, key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise DetectionError(f"missing tensor {key!r}")
    return shapes[key]


# ----------------------------------------------------------------------------- family


def _probe(prefix: str, layout: str) -> str:
    """A key prefix that only a text encoder of this layout has (OpenCLIP prefixes are shared with logit_scale)."""
    return prefix + ("transformer." if layout == "openclip" else "")


def detect_arch(shapes: Shapes) -> str:
    """The family (``sd1``, ``sd2``, ``sdxl``, ``sdxl_refiner``): by text-encoder layout, else by UNet shapes."""
    if _has_prefix(shapes, ZERO123_PROJECTION):
        return "sd1"  # Stable Zero123: an SD1.x UNet; its CLIP may carry a text tower that is never used
    for arch in ("sdxl", "sdxl_refiner", "sd1", "sd2"):
        if all(_has_prefix(shapes, _probe(prefix, layout)) for prefix, layout in TEXT_LAYOUTS[arch].values()):
            if arch == "sdxl_refiner" and _has_prefix(shapes, "conditioner.embedders.1."):
                continue
            return arch
    if not _has_prefix(shapes, UNET_PREFIX):
        raise DetectionError("no Stable Diffusion UNet (model.diffusion_model.*) or text encoder keys found")
    # A UNet alone: its cross-attention width and ADM input tell the family apart.
    context = _context_dim(shapes, UNET_PREFIX)
    adm = shapes.get(UNET_PREFIX + "label_emb.0.0.weight")
    linear = _linear_projection(shapes, UNET_PREFIX)
    if adm is not None:
        if context == 1024:
            return "sd2"  # SD2.1 unCLIP: its image-embedding input
        return "sdxl_refiner" if context == 1280 else "sdxl"
    return "sd2" if linear else "sd1"


def _context_dim(shapes: Shapes, p: str) -> int:
    for key, shape in shapes.items():
        if key.startswith(p) and key.endswith("attn2.to_k.weight"):
            return shape[1]
    raise DetectionError("the UNet has no cross-attention layers (attn2.to_k.weight)")


def _linear_projection(shapes: Shapes, p: str) -> bool:
    for key, shape in shapes.items():
        if key.startswith(p) and key.endswith(".proj_in.weight"):
            return len(shape) == 2
    return False


# ----------------------------------------------------------------------------- UNet


def _depth(shapes: Shapes, block: str) -> int:
    """Transformer blocks inside ``block`` (0 if it holds no attention)."""
    found = _indices(shapes, re.escape(block) + r"\.transformer_blocks\.(\d+)\.")
    return len(found)


def _unet_levels(shapes: Shapes, p: str) -> list[list[tuple[int, int]]]:
    """Input blocks grouped by resolution level: a list of (resnet channels, transformer depth)."""
    levels: list[list[tuple[int, int]]] = [[]]
    for i in _indices(shapes, re.escape(p) + r"input_blocks\.(\d+)\.")[1:]:
        if f"{p}input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
            continue
        channels = _need(shapes, f"{p}input_blocks.{i}.0.out_layers.3.weight")[0]
        levels[-1].append((channels, _depth(shapes, f"{p}input_blocks.{i}.1")))
    return levels


def derive_unet_config(shapes: Shapes, arch: str, p: str = UNET_PREFIX) -> dict[str, Any]:
    """A diffusers ``UNet2DConditionModel`` config for the UNet under prefix ``p``."""
    conv_in = _need(shapes, p + "input_blocks.0.0.weight")
    levels = _unet_levels(shapes, p)
    blocks_per_level = {len(level) for level in levels}
    if len(blocks_per_level) != 1 or 0 in blocks_per_level:
        raise DetectionError(f"unsupported UNet: levels with different block counts {sorted(blocks_per_level)}")
    channels, depths = [], []
    for level in levels:
        if len(set(level)) != 1:
            raise DetectionError("unsupported UNet: blocks of one level differ in width or attention depth")
        channels.append(level[0][0])
        depths.append(level[0][1])
    mid_depth = _depth(shapes, p + "middle_block.1")
    if mid_depth == 0:
        raise DetectionError("unsupported UNet: no attention in the middle block")
    if depths[-1] and depths[-1] != mid_depth:
        raise DetectionError("unsupported UNet: the middle block's attention depth differs from the last level's")
    # diffusers gives the middle block the last level's depth; levels without attention ignore theirs.
    layers = [d or 1 for d in depths[:-1]] + [mid_depth]
    layers_per_block = blocks_per_level.pop()
    linear = _linear_projection(shapes, p)
    heads: int | list[int] = 8 if arch == "sd1" else [max(1, c // 64) for c in channels]
    config: dict[str, Any] = {
        "sample_size": {"sd1": 64, "sd2": 96}.get(arch, 128),
        "in_channels": conv_in[1],
        "out_channels": _need(shapes, p + "out.2.weight")[0],
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        "block_out_channels": channels,
        "layers_per_block": layers_per_block,
        "cross_attention_dim": _context_dim(shapes, p),
        "transformer_layers_per_block": layers,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "upcast_attention": arch == "sd2",
    }
    time_dim = _need(shapes, p + "time_embed.0.weight")[0]
    if time_dim != 4 * channels[0]:
        config["time_embedding_dim"] = time_dim
    _check_up_path(shapes, p, depths, layers_per_block)
    classes = shapes.get(p + "label_emb.weight")
    if classes is not None:  # the x4 upscaler's noise-level embedding; 8 heads; some levels cross-attend only
        config.update(num_class_embeds=classes[0], attention_head_dim=8, upcast_attention=False,
                      only_cross_attention=_only_cross_attention(shapes, p, channels, depths,
                                                                          layers_per_block))
    adm = shapes.get(p + "label_emb.0.0.weight")
    if adm is not None and arch == "sd2":  # SD2.1 unCLIP: the image embedding and its noise level
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=adm[1])
    elif adm is not None:
        if arch not in ADM_SIZE_EMBEDDINGS:
            raise DetectionError(f"unsupported UNet: an ADM input ({adm[1]} wide) on a {arch} model")
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=ADM_EMBED_DIM,
            projection_class_embeddings_input_dim=adm[1],
        )
    elif arch in ADM_SIZE_EMBEDDINGS:
        raise DetectionError(f"a {arch} checkpoint needs the UNet's ADM input (label_emb), which is missing")
    return config


def _only_cross_attention(shapes: Shapes, p: str, channels: list[int], depths: list[int],
                          layers_per_block: int) -> list[bool]:
    """Per level: does the first attention's ``attn1`` read the context (its keys as wide as the context)?"""
    flags = []
    for level, (width, depth) in enumerate(zip(channels, depths, strict=True)):
        key = f"{p}input_blocks.{1 + level * (layers_per_block + 1)}.1.transformer_blocks.0.attn1.to_k.weight"
        flags.append(bool(depth) and key in shapes and shapes[key][1] != width)
    return flags


def _check_up_path(shapes: Shapes, p: str, depths: list[int], layers_per_block: int) -> None:
    """The decoder half must mirror the encoder half (diffusers cannot express anything else)."""
    outputs = _indices(shapes, re.escape(p) + r"output_blocks\.(\d+)\.")
    expected = len(depths) * (layers_per_block + 1)
    if len(outputs) != expected:
        raise DetectionError(f"unsupported UNet: {len(outputs)} output blocks where {expected} were expected")
    for level, depth in enumerate(reversed(depths)):
        for j in range(layers_per_block + 1):
            found = _depth(shapes, f"{p}output_blocks.{level * (layers_per_block + 1) + j}.1")
            if found != depth:
                raise DetectionError("unsupported UNet: the decoder's attention depths do not mirror the encoder's")


# ----------------------------------------------------------------------------- VAE


def find_vae_prefix(shapes: Shapes) -> str | None:
    """The prefix under which an LDM-layout VAE lives (``first_stage_model.``, ``vae.`` or none)."""
    for prefix in VAE_PREFIXES:
        if prefix + "encoder.conv_in.weight" in shapes and prefix + "decoder.conv_out.weight" in shapes:
            return prefix
    return None


def derive_vae_config(shapes: Shapes, prefix: str) -> dict[str, Any]:
    """A diffusers ``AutoencoderKL`` config for the VAE under ``prefix`` (scaling factor not set)."""
    p = prefix
    levels = _indices(shapes, re.escape(p) + r"encoder\.down\.(\d+)\.")
    if not levels:
        raise DetectionError("the VAE has no encoder.down.* blocks (a diffusers-format VAE is not supported)")
    channels = [_need(shapes, f"{p}encoder.down.{i}.block.0.conv2.weight")[0] for i in levels]
    return {
        "in_channels": _need(shapes, p + "encoder.conv_in.weight")[1],
        "out_channels": _need(shapes, p + "decoder.conv_out.weight")[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": channels,
        "latent_channels": _need(shapes, p + "decoder.conv_in.weight")[1],
        "layers_per_block": len(_indices(shapes, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\.")),
        "sample_size": 512,
    }


# ----------------------------------------------------------------------------- text encoders


def derive_text_config(shapes: Shapes, prefix: str, layout: str) -> dict[str, Any]:
    """``CLIPTextConfig`` arguments for a text encoder in the HF or OpenCLIP layout."""
    if layout == "hf":
        p = prefix + "text_model." if _has_prefix(shapes, prefix + "text_model.") else prefix
        vocab, hidden = _need(shapes, p + "embeddings.token_embedding.weight")
        positions = _need(shapes, p + "embeddings.position_embedding.weight")[0]
        layers = _indices(shapes, re.escape(p) + r"encoder\.layers\.(\d+)\.")
        intermediate = _need(shapes, p + "encoder.layers.0.mlp.fc1.weight")[0]
        act, projection = "quick_gelu", hidden
    else:
        vocab, hidden = _need(shapes, prefix + "token_embedding.weight")
        positions = _need(shapes, prefix + "positional_embedding")[0]
        layers = _indices(shapes, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
        intermediate = _need(shapes, prefix + "transformer.resblocks.0.mlp.c_fc.weight")[0]
        act = "gelu"
        projection = shapes.get(prefix + "text_projection", (hidden, hidden))[1]
    if not layers:
        raise DetectionError(f"the text encoder under {prefix!r} has no layers")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": len(layers),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": positions,
        "hidden_act": act,
        "projection_dim": projection,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407 if layout == "hf" else 0,
    }


# ----------------------------------------------------------------------------- whole file


def detect(shapes: Shapes) -> CheckpointLayout:
    """Describe a single-file checkpoint (UNet, VAE, text encoders) from its shapes.

    Raises :class:`DetectionError` when no known model is found. A file without a UNet
    (text encoder or VAE only) is still described, with ``unet_config`` None.
    """
    arch = detect_arch(shapes)
    has_unet = _has_prefix(shapes, UNET_PREFIX)
    unet_config = derive_unet_config(shapes, arch) if has_unet else None
    vae_prefix = find_vae_prefix(shapes)
    if vae_prefix == "" and has_unet:
        vae_prefix = None  # bare encoder.* keys next to a UNet are not a known layout
    vae_config = derive_vae_config(shapes, vae_prefix) if vae_prefix is not None else None
    encoders = []
    for name, (prefix, layout) in TEXT_LAYOUTS[arch].items():
        if _has_prefix(shapes, _probe(prefix, layout)):
            config = derive_text_config(shapes, prefix, layout)
            encoders.append(TextEncoderSpec(name, prefix, layout, config, _params(shapes, prefix)))
    adm = shapes.get(UNET_PREFIX + "label_emb.0.0.weight")
    return CheckpointLayout(
        arch=arch,
        unet_config=unet_config,
        vae_config=vae_config,
        vae_prefix=vae_prefix,
        text_encoders=encoders,
        unet_params=_params(shapes, UNET_PREFIX),
        vae_params=_params(shapes, vae_prefix) if vae_prefix else 0,
        adm_channels=adm[1] if adm else None,
        variant=model_variant(shapes, unet_config),
    )


def model_variant(shapes: Shapes, unet_config: dict[str, Any] | None) -> str | None:
    """``zero123`` (a ``cc_projection`` beside the UNet), ``x4_upscaler`` (7 input channels and a
    noise-level class embedding), ``unclip`` (SD2.1 unCLIP: an image-embedding class input), or None
    for the plain families."""
    if unet_config is None:
        return None
    if _has_prefix(shapes, ZERO123_PROJECTION):
        return "zero123"
    if unet_config["in_channels"] == X4_UPSCALER_CHANNELS and "num_class_embeds" in unet_config:
        return "x4_upscaler"
    if unet_config.get("class_embed_type") == "projection":
        return "unclip"
    return None
