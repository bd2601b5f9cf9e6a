"""Seeded random-weight checkpoints in the original single-file (LDM) layouts.

For tests, benchmarks and the server's embedded default model: no download, no licence,
and the same loader path as a real file. Sizes:

- ``tiny``: a few million parameters (text encoders keep CLIP's 49,408-token vocabulary),
  a UNet step in milliseconds on a CPU; 4-level VAE so latents are still 1/8 of the image;
- ``small``: the real text encoders and VAE and a UNet with the real base width (320, 384
  for the refiner) but two levels and one block per level. For SD1.5 and SD2 that is what
  ComfyUI needs to recognise the family; ComfyUI's SDXL match also wants the full depth
  pattern, so ``small`` SDXL files are ours only;
- ``full``: the real shapes (SD1.5: 1.07 B parameters).

Weights are drawn per tensor from a generator seeded by (seed, tensor name), so the same
seed gives the same bytes; scales are small (std 0.5/sqrt(fan_in), norms near 1, biases
near 0) so activations stay finite through the whole network.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusion import convert
from diffusion.detect import ADM_EMBED_DIM, ADM_SIZE_EMBEDDINGS, TEXT_LAYOUTS, UNET_PREFIX
from diffusion.models import Arch, Prediction

ORIGIN = "noodlebox synthetic random weights"
ARCHS = ("sd15", "sd15-inpaint", "sd15-ip2p", "sd2", "sd2-v", "sdxl", "sdxl-refiner")
#: The transformer families, written by ``diffusion.families.synthetic`` (sizes tiny and small);
#: ``write_checkpoint`` takes them too.
TRANSFORMER_ARCHS = ("sd35", "flux-dev", "flux-schnell")
#: SD-family models with their own conditioning, written by their own modules (``diffusion.x4_upscaler``,
#: ``diffusion.zero123``, ``diffusion.unclip``); ``write_checkpoint`` takes them too.
IMAGE_ARCHS = ("sd-x4-upscaler", "zero123", "sd2-unclip")
SIZES = ("tiny", "small", "full")

StateDict = dict[str, torch.Tensor]

# name -> (family, UNet input channels, prediction)
_FAMILIES: dict[str, tuple[Arch, int, Prediction]] = {
    "sd15": ("sd1", 4, "eps"),
    "sd15-inpaint": ("sd1", 9, "eps"),
    "sd15-ip2p": ("sd1", 8, "eps"),  # InstructPix2Pix: latent + the source image's latent
    "sd2": ("sd2", 4, "eps"),
    "sd2-v": ("sd2", 4, "v"),
    "sdxl": ("sdxl", 4, "eps"),
    "sdxl-refiner": ("sdxl_refiner", 4, "eps"),
}

# (hidden, layers, intermediate, activation)
_TEXT_SHAPES = {
    ("clip_l", "full"): (768, 12, 3072, "quick_gelu"),
    ("clip_h", "full"): (1024, 24, 4096, "gelu"),
    ("clip_g", "full"): (1280, 32, 5120, "gelu"),
    ("clip_l", "tiny"): (64, 2, 128, "quick_gelu"),
    ("clip_h", "tiny"): (64, 2, 128, "gelu"),
    ("clip_g", "tiny"): (64, 2, 128, "gelu"),
}

# family -> size -> (block widths, cross-attention depth per level (0 = none), middle depth, blocks per level)
_UNET_SHAPES: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...], int, int]]] = {
    "sd1": {
        "tiny": ((32, 64), (1, 0), 1, 1),
        "small": ((320, 640), (1, 1), 1, 1),
        "full": ((320, 640, 1280, 1280), (1, 1, 1, 0), 1, 2),
    },
    "sdxl": {
        "tiny": ((32, 64), (0, 2), 2, 1),
        "small": ((320, 640), (0, 2), 2, 1),
        "full": ((320, 640, 1280), (0, 2, 10), 10, 2),
    },
    "sdxl_refiner": {
        "tiny": ((32, 64, 64), (0, 2, 0), 2, 1),
        "small": ((384, 768), (0, 4), 4, 1),
        "full": ((384, 768, 1536, 1536), (0, 4, 4, 0), 4, 2),
    },
}
_UNET_SHAPES["sd2"] = _UNET_SHAPES["sd1"]

_VAE_SHAPES = {"tiny": ((32, 32, 32, 32), 1), "small": ((128, 256, 512, 512), 2), "full": ((128, 256, 512, 512), 2)}


@dataclass(frozen=True)
class SyntheticSpec:
    """The configs of one synthetic model: diffusers UNet/VAE kwargs and ``CLIPTextConfig`` kwargs per encoder."""

    name: str
    size: str
    arch: Arch
    prediction: Prediction
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, dict[str, Any]]


def _text_config(encoder: str, size: str) -> dict[str, Any]:
    hidden, layers, intermediate, act = _TEXT_SHAPES[(encoder, "tiny" if size == "tiny" else "full")]
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": hidden,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407 if encoder == "clip_l" else 0,
    }


def _unet_config(arch: Arch, size: str, in_channels: int, context: int, pooled: int) -> dict[str, Any]:
    widths, depths, mid, per_level = _UNET_SHAPES[arch][size]
    config: dict[str, Any] = {
        "sample_size": {"sd1": 64, "sd2": 96}.get(arch, 128),
        "in_channels": in_channels,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        "block_out_channels": list(widths),
        "layers_per_block": per_level,
        "cross_attention_dim": context,
        "transformer_layers_per_block": [d or 1 for d in depths[:-1]] + [mid],
        "attention_head_dim": 8 if arch == "sd1" else [max(1, w // 64) for w in widths],
        "use_linear_projection": arch != "sd1",
        "upcast_attention": arch == "sd2",
    }
    if arch in ADM_SIZE_EMBEDDINGS:
        config.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=ADM_EMBED_DIM,
            projection_class_embeddings_input_dim=pooled + ADM_SIZE_EMBEDDINGS[arch] * ADM_EMBED_DIM,
        )
    return config


def synthetic_spec(name: str, size: str = "tiny") -> SyntheticSpec:
    """The configs for ``name`` (one of :data:`ARCHS`) at ``size`` (one of :data:`SIZES`)."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown arch {name!r}; expected one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    arch, in_channels, prediction = _FAMILIES[name]
    text = {encoder: _text_config(encoder, size) for encoder in TEXT_LAYOUTS[arch]}
    # The UNet attends to the concatenated hidden states; the ADM gets bigG's pooled projection.
    context = sum(c["hidden_size"] for c in text.values())
    pooled = text["clip_g"]["projection_dim"] if "clip_g" in text else 0
    widths, layers = _VAE_SHAPES[size]
    vae = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": list(widths),
        "latent_channels": 4,
        "layers_per_block": layers,
        "sample_size": 512,
    }
    unet = _unet_config(arch, size, in_channels, context, pooled)
    return SyntheticSpec(name, size, arch, prediction, unet, vae, text)


def build_models(spec: SyntheticSpec) -> dict[str, torch.nn.Module]:
    """Empty (meta-device) diffusers / transformers models for a spec: ``unet``, ``vae`` and each text encoder."""
    with init_empty_weights():
        models: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel(**spec.unet),
            "vae": AutoencoderKL(**spec.vae),
        }
        for encoder, config in spec.text.items():
            cls = CLIPTextModelWithProjection if encoder == "clip_g" else CLIPTextModel
            models[encoder] = cls(CLIPTextConfig(**config))
    return models


def _random_tensor(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(key.encode())) % 2**63)
    noise = torch.randn(shape, generator=generator)
    leaf = key.rsplit(".", 2)[-2] if "." in key else key
    if len(shape) == 1:
        if key.endswith("weight") and "norm" in leaf:
            return 1.0 + 0.02 * noise
        return 0.02 * noise
    if "embedding" in key:
        return 0.02 * noise
    fan_in = max(1, noise[0].numel())
    return noise * (0.5 / fan_in**0.5)


def random_weights(spec: SyntheticSpec, seed: int = 0) -> dict[str, StateDict]:
    """Seeded float32 weights for every part, in diffusers / transformers key names."""
    weights: dict[str, StateDict] = {}
    for part, model in build_models(spec).items():
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        weights[part] = {k: _random_tensor(f"{part}.{k}", shape, seed) for k, shape in sorted(shapes.items())}
    return weights


def original_layout(spec: SyntheticSpec, weights: dict[str, StateDict], seed: int = 0) -> StateDict:
    """The parts' weights under the single-file key names real checkpoints use."""
    out: StateDict = {}
    for key, value in convert.unet_to_ldm(weights["unet"], spec.unet).items():
        out[UNET_PREFIX + key] = value
    for key, value in convert.vae_to_ldm(weights["vae"], spec.vae).items():
        out["first_stage_model." + key] = value
    for encoder, (prefix, layout) in TEXT_LAYOUTS[spec.arch].items():
        state = weights[encoder]
        if layout == "hf":
            mapped = convert.clip_to_ldm(state, spec.text[encoder]["max_position_embeddings"])
        else:
            mapped = convert.openclip_to_ldm(state)
            if "text_projection" not in mapped:  # SD2's file carries a projection its UNet never uses
                hidden = spec.text[encoder]["hidden_size"]
                mapped["text_projection"] = _random_tensor(f"{encoder}.text_projection", (hidden, hidden), seed)
        out.update({prefix + k: v for k, v in mapped.items()})
    marker = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
    if spec.prediction == "v" and marker in out:
        # ComfyUI tells SD2 v models by this tensor's spread (std > 0.09); make ours pass its test.
        out[marker] = out[marker] * (0.15 / out[marker].std(unbiased=False).item())
    return out


def make_checkpoint(
    name: str, size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float16
) -> tuple[StateDict, dict[str, str]]:
    """A synthetic checkpoint's tensors (LDM keys, floats cast to ``dtype``) and safetensors metadata."""
    spec = synthetic_spec(name, size)
    tensors = original_layout(spec, random_weights(spec, seed), seed)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    metadata = {
        "noodlebox.origin": ORIGIN,
        "noodlebox.arch": name,
        "noodlebox.size": size,
        "noodlebox.seed": str(seed),
        "modelspec.prediction_type": "v" if spec.prediction == "v" else "epsilon",
    }
    return tensors, metadata


def write_checkpoint(
    path: str | os.PathLike[str], name: str, size: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float16
) -> Path:
    """Write a synthetic ``.safetensors`` checkpoint; same arguments, same bytes."""
    if name in TRANSFORMER_ARCHS:
        from diffusion.families import synthetic as transformer_synthetic  # it builds on this module

        return transformer_synthetic.write_checkpoint(path, name, size, seed, dtype)
    if name in IMAGE_ARCHS:
        from diffusion import unclip, x4_upscaler, zero123  # they build on this module

        writer = {"sd-x4-upscaler": x4_upscaler.write_checkpoint, "zero123": zero123.write_checkpoint,
                  "sd2-unclip": unclip.write_checkpoint}[name]
        return writer(path, size, seed, dtype)
    tensors, metadata = make_checkpoint(name, size, seed, dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, path, metadata)
    return path


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def save_safetensors(tensors: StateDict, path: str | os.PathLike[str], metadata: dict[str, str]) -> None:
    """Write a ``.safetensors`` file with a byte-for-byte reproducible header.

    ``safetensors.torch.save_file`` stores the metadata through a hash map, so its order
    (and the file's bytes) change from run to run; here keys are sorted. Tensors are
    streamed to disk one at a time.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    names = sorted(tensors)
    for name in names:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8-byte alignment
    with open(path, "wb") as fh:
        fh.write(len(encoded).to_bytes(8, "little"))
        fh.write(encoded)
        for name in names:
            fh.write(tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
