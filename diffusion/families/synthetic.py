"""Seeded random-weight SD3.5 and Flux.1 files in the real layouts: all-in-one and separate parts.

The same (arch, size, seed) gives the same tensors in every form, so a checkpoint and the
separate files (diffusion model, clip_l, clip_g, t5xxl, VAE) written from it load to the
same models. Sizes:

- ``tiny``: 64-wide heads for SD3 (2 heads, 2 blocks, dual attention in block 0 and q/k
  norms, as SD3.5 medium) and 2x32-wide heads for Flux (1 double and 2 single blocks); CLIPs
  of width 64 with the real 49,408-token vocabulary, a 2-layer T5 of width 128 with the
  real 32,128 embeddings; a 16-channel VAE of width 32;
- ``small``: the real transformer widths (SD3.5 large 2432, Flux 3072) and text-encoder
  widths, with two blocks / layers each, and the real VAE.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from diffusion import convert
from diffusion.families import flux, sd3
from diffusion.families.keymap import Rule, StateDict, to_original
from diffusion.files import atomic_path
from diffusion.synthetic import ORIGIN, _random_tensor, _text_config, save_safetensors

ARCHS = ("sd35", "flux-dev", "flux-schnell")
SIZES = ("tiny", "small")
#: Separate-file parts, in the order an all-in-one file lists them.
PARTS = ("diffusion_model", "clip_l", "clip_g", "t5xxl", "vae")
#: Key prefix of each part inside an all-in-one checkpoint.
CHECKPOINT_PREFIXES = {
    "diffusion_model": "model.diffusion_model.",
    "clip_l": "text_encoders.clip_l.transformer.",
    "clip_g": "text_encoders.clip_g.transformer.",
    "t5xxl": "text_encoders.t5xxl.transformer.",
    "vae": "first_stage_model.",
}

_T5_SHAPES = {  # d_model, d_kv, d_ff, heads, layers
    "tiny": (128, 32, 256, 4, 2),
    "small": (4096, 64, 10240, 64, 2),
    "full": (4096, 64, 10240, 64, 24),
}


@dataclass(frozen=True)
class TransformerSpec:
    """The configs of one synthetic SD3/Flux model: transformer, text encoders and VAE kwargs."""

    arch: str
    size: str
    family: str  # "sd3" or "flux"
    transformer: dict[str, Any]
    text: dict[str, dict[str, Any]]
    vae: dict[str, Any]


def t5_config(size: str = "full") -> dict[str, Any]:
    """``T5Config`` kwargs of a T5 v1.1 encoder (``full`` is T5-XXL, 4.7 B parameters)."""
    d_model, d_kv, d_ff, heads, layers = _T5_SHAPES[size]
    return {
        "vocab_size": 32128, "d_model": d_model, "d_kv": d_kv, "d_ff": d_ff, "num_heads": heads,
        "num_layers": layers, "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "is_encoder_decoder": False, "use_cache": False,
        "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1,
    }


def _vae_config(size: str) -> dict[str, Any]:
    widths, layers = ((32, 32, 32, 32), 1) if size == "tiny" else ((128, 256, 512, 512), 2)
    return {
        "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": list(widths), "layers_per_block": layers,
        "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False, "sample_size": 1024,
    }


def transformer_spec(arch: str, size: str = "tiny") -> TransformerSpec:
    """The configs for ``arch`` (one of :data:`ARCHS`) at ``size`` (one of :data:`SIZES`)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ValueError(f"size {size!r} is not made for {arch}; expected one of {', '.join(SIZES)}")
    t5 = t5_config(size)
    if arch == "sd35":
        text = {"clip_l": _text_config("clip_l", size), "clip_g": _text_config("clip_g", size), "t5xxl": t5}
        heads, layers = (2, 2) if size == "tiny" else (38, 2)
        model = {
            "sample_size": 128, "patch_size": 2, "in_channels": 16, "num_layers": layers,
            "attention_head_dim": sd3.HEAD_DIM, "num_attention_heads": heads, "joint_attention_dim": t5["d_model"],
            "caption_projection_dim": heads * sd3.HEAD_DIM,
            "pooled_projection_dim": text["clip_l"]["projection_dim"] + text["clip_g"]["projection_dim"],
            "out_channels": 16, "pos_embed_max_size": 32 if size == "tiny" else 192,
            "dual_attention_layers": (0,) if size == "tiny" else (), "qk_norm": "rms_norm",
        }
        return TransformerSpec(arch, size, "sd3", model, text, _vae_config(size))
    text = {"clip_l": _text_config("clip_l", size), "t5xxl": t5}
    head_dim, heads, double, single = (32, 2, 1, 2) if size == "tiny" else (128, 24, 1, 1)
    model = {
        "patch_size": 1, "in_channels": 64, "out_channels": 64, "num_layers": double, "num_single_layers": single,
        "attention_head_dim": head_dim, "num_attention_heads": heads, "joint_attention_dim": t5["d_model"],
        "pooled_projection_dim": text["clip_l"]["projection_dim"], "guidance_embeds": arch == "flux-dev",
        "axes_dims_rope": flux.rope_axes(head_dim),
    }
    return TransformerSpec(arch, size, "flux", model, text, _vae_config(size))


def build_models(spec: TransformerSpec) -> dict[str, torch.nn.Module]:
    """Empty (meta-device) models of a spec, keyed by part name."""
    with init_empty_weights():
        cls = SD3Transformer2DModel if spec.family == "sd3" else FluxTransformer2DModel
        models: dict[str, torch.nn.Module] = {"diffusion_model": cls(**spec.transformer)}
        models["vae"] = AutoencoderKL(**spec.vae)
        for name, config in spec.text.items():
            if name == "t5xxl":
                models[name] = T5EncoderModel(T5Config(**config))
            else:
                models[name] = CLIPTextModelWithProjection(CLIPTextConfig(**config))
    return models


def key_rules(spec: TransformerSpec) -> list[Rule]:
    """The transformer key map of a spec's family."""
    family = sd3 if spec.family == "sd3" else flux
    return family.key_rules(spec.transformer)


def original_parts(spec: TransformerSpec, seed: int = 0) -> dict[str, StateDict]:
    """Seeded float32 weights per part, each in its original layout without the checkpoint prefix."""
    parts: dict[str, StateDict] = {}
    for name, model in build_models(spec).items():
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = {k: _random_tensor(f"{spec.arch}.{name}.{k}", s, seed) for k, s in sorted(shapes.items())}
        if name == "diffusion_model":
            parts[name] = to_original(state, key_rules(spec))
        elif name == "vae":
            parts[name] = convert.vae_to_ldm(state, spec.vae)
        elif name == "t5xxl":
            # The encoder's embedding is tied to "shared"; real files store it once.
            parts[name] = {k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"}
        else:
            parts[name] = state
    return parts


def _metadata(spec: TransformerSpec, seed: int, part: str | None = None) -> dict[str, str]:
    meta = {"noodlebox.origin": ORIGIN, "noodlebox.arch": spec.arch, "noodlebox.size": spec.size,
            "noodlebox.seed": str(seed)}
    if part is not None:
        meta["noodlebox.part"] = part
    return meta


def _cast(tensors: StateDict, dtype: torch.dtype) -> StateDict:
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}


def make_checkpoint(arch: str, size: str = "tiny", seed: int = 0,
                    dtype: torch.dtype = torch.float16) -> tuple[StateDict, dict[str, str]]:
    """An all-in-one checkpoint's tensors (ComfyUI's key layout, floats in ``dtype``) and metadata."""
    spec = transformer_spec(arch, size)
    tensors: StateDict = {}
    for part, state in original_parts(spec, seed).items():
        tensors.update({CHECKPOINT_PREFIXES[part] + k: v for k, v in state.items()})
    return _cast(tensors, dtype), _metadata(spec, seed)


def make_part(part: str, arch: str, size: str = "tiny", seed: int = 0,
              dtype: torch.dtype = torch.float16) -> tuple[StateDict, dict[str, str]]:
    """One separate file's tensors (no prefix, as the standalone files store them) and metadata."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {', '.join(PARTS)}")
    spec = transformer_spec(arch, size)
    parts = original_parts(spec, seed)
    if part not in parts:
        raise ValueError(f"{arch} has no {part} (it has {', '.join(parts)})")
    return _cast(parts[part], dtype), _metadata(spec, seed, part)


def _write(path: str | os.PathLike[str], tensors: StateDict, metadata: dict[str, str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata)
    return path


def write_checkpoint(path: str | os.PathLike[str], arch: str, size: str = "tiny", seed: int = 0,
                     dtype: torch.dtype = torch.float16) -> Path:
    """Write an all-in-one ``.safetensors`` checkpoint (same arguments, same bytes)."""
    return _write(path, *make_checkpoint(arch, size, seed, dtype))


def write_part(path: str | os.PathLike[str], part: str, arch: str, size: str = "tiny", seed: int = 0,
               dtype: torch.dtype = torch.float16) -> Path:
    """Write one separate file (diffusion model, clip_l, clip_g, t5xxl or VAE) of ``arch``."""
    return _write(path, *make_part(part, arch, size, seed, dtype))


def _kind_writer(part: str) -> Callable[..., Path]:
    def write(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0, arch: str | None = None,
              size: str = "tiny") -> Path:
        if arch is None:
            raise ValueError(f"--arch is required for a {part} file: one of {', '.join(ARCHS)}")
        return write_part(out, part, arch, size, seed)

    write.__name__ = f"write_{part}"
    write.__doc__ = f"``noodlebox make-model --kind {part} --arch A``: the {part} file of a synthetic SD3.5/Flux model."
    return write


#: ``make-model`` writers of the separate files (``nodes.model_tools.MODEL_KINDS``).
write_diffusion_model = _kind_writer("diffusion_model")
write_clip_l = _kind_writer("clip_l")
write_clip_g = _kind_writer("clip_g")
write_t5xxl = _kind_writer("t5xxl")
write_vae16 = _kind_writer("vae")
