"""Seeded random LoRA-family files for a base checkpoint, in the key layouts real trainers write.

Kinds (``noodlebox make-model --kind K``):

- ``lora``: kohya LoRA on LDM names (``lora_unet_input_blocks_1_1_proj_in``, ``lora_te_`` /
  ``lora_te1_`` / ``lora_te2_``): the attention blocks' linear and 1x1 layers and the text
  encoders' attention and MLP layers; ``lora_down``, ``lora_up``, ``alpha``.
- ``locon``: the same plus the ResNet and resampling convolutions (3x3 ``lora_down``).
- ``loha``: LyCORIS LoHa (``hada_w1_a`` ... ``hada_w2_b``, ``alpha``) on the LoRA targets.
- ``lokr``: LyCORIS LoKr (whole ``lokr_w1``, decomposed ``lokr_w2_a``/``_b``) on the LoRA targets.
- ``diffusers-lora``: PEFT keys on diffusers names (``unet.down_blocks...lora_A.weight``,
  ``text_encoder.text_model...lora_B.weight``) for the UNet attention and text encoders.

For an SD3/SD3.5 or Flux base (a checkpoint or a ``diffusion_models`` file) the kohya kinds
use sd-scripts' names on the original layout (``lora_unet_double_blocks_0_img_attn_qkv``,
``lora_te1_`` CLIP-L, ``lora_te2_`` CLIP-G, ``lora_te3_`` T5) and ``diffusers-lora`` the same
change in diffusers' layout (fused layers split, ``transformer.`` / ``text_encoder*.`` keys).

Same base, kind, rank and seed: same bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.convert import unet_ldm_names
from diffusion.detect import DetectionError, detect
from diffusion.files import atomic_path
from diffusion.synthetic import save_safetensors

KINDS = ("lora", "locon", "loha", "lokr", "diffusers-lora")
_KOHYA_TE = {"sd1": {"clip_l": "lora_te"}, "sd2": {"clip_h": "lora_te"},
             "sdxl": {"clip_l": "lora_te1", "clip_g": "lora_te2"}, "sdxl_refiner": {"clip_g": "lora_te2"}}
_DIFFUSERS_TE = {"clip_l": "text_encoder", "clip_h": "text_encoder", "clip_g": "text_encoder_2"}
_UNET_RESNET_PARTS = (".conv1", ".conv2", ".time_emb_proj", ".conv_shortcut", "samplers.0.conv")


def _base_models(base: Path) -> tuple[str, nn.Module, dict[str, nn.Module]]:
    """The base checkpoint's arch, UNet and text encoders, built empty (meta device) from its shapes."""
    try:
        with TensorFile(base) as file:
            layout = detect(file.shapes)
    except (CheckpointError, DetectionError) as exc:
        raise ValueError(f"{base.name}: not a usable base checkpoint ({exc})") from None
    if layout.unet_config is None:
        raise ValueError(f"{base.name}: the base checkpoint has no UNet")
    with init_empty_weights():
        unet = UNet2DConditionModel(**layout.unet_config)
        texts: dict[str, nn.Module] = {}
        for spec in layout.text_encoders:
            cls = CLIPTextModelWithProjection if spec.name == "clip_g" else CLIPTextModel
            texts[spec.name] = cls(CLIPTextConfig(**spec.config))
    return layout.arch, unet, texts


def _layers(module: nn.Module, resnets: bool) -> Iterator[tuple[str, nn.Module]]:
    """The linear / conv layers a LoRA trainer targets, by module path."""
    for name, layer in module.named_modules():
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        in_attention = ".attentions." in name or name.startswith(("text_model.", "encoder."))
        if in_attention and (isinstance(layer, nn.Linear) or layer.kernel_size == (1, 1)):
            if "text_model.embeddings" not in name and "position" not in name:
                yield name, layer
        elif resnets and isinstance(layer, (nn.Conv2d, nn.Linear)) and name.endswith(_UNET_RESNET_PARTS):
            yield name, layer


def _random(key: str, shape: tuple[int, ...], seed: int, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(key.encode())) % 2**63)
    return torch.randn(shape, generator=generator) * std


def _factors(stem: str, layer: nn.Module, kind: str, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """One module's parts for ``kind`` (fp16, as trainers save them)."""
    out_dim = layer.weight.shape[0]
    in_dim = layer.weight.shape[1]
    kernel = tuple(layer.weight.shape[2:])
    fan_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
    parts: dict[str, torch.Tensor] = {}
    if kind in ("lora", "locon"):
        parts[".lora_down.weight"] = _random(stem + "down", (rank, in_dim, *kernel), seed, fan_in ** -0.5)
        parts[".lora_up.weight"] = _random(stem + "up", (out_dim, rank, *[1] * len(kernel)), seed, 0.5 * rank ** -0.5)
        parts[".alpha"] = torch.tensor(rank / 2)
    elif kind == "loha":
        for w in ("w1", "w2"):
            parts[f".hada_{w}_a"] = _random(stem + w + "a", (out_dim, rank), seed, 0.7 * rank ** -0.5)
            parts[f".hada_{w}_b"] = _random(stem + w + "b", (rank, fan_in), seed, 0.7 * fan_in ** -0.25)
        parts[".alpha"] = torch.tensor(float(rank))
    elif kind == "lokr":
        factor = next(f for f in (4, 2, 1) if out_dim % f == 0 and in_dim % f == 0)
        parts[".lokr_w1"] = _random(stem + "w1", (factor, factor), seed, 1.0)
        parts[".lokr_w2_a"] = _random(stem + "w2a", (out_dim // factor, rank), seed, 0.5 * rank ** -0.5)
        parts[".lokr_w2_b"] = _random(stem + "w2b", (rank, fan_in // factor), seed, (fan_in // factor) ** -0.5)
        parts[".alpha"] = torch.tensor(float(rank))
    else:  # diffusers-lora (PEFT)
        parts[".lora_A.weight"] = _random(stem + "A", (rank, in_dim, *kernel), seed, fan_in ** -0.5)
        parts[".lora_B.weight"] = _random(stem + "B", (out_dim, rank, *[1] * len(kernel)), seed, 0.5 * rank ** -0.5)
    return {k: v.to(torch.float16) for k, v in parts.items()}


class _Shape:
    """A stand-in layer for :func:`_factors`: only the weight's shape is read."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.weight = torch.empty(shape, device="meta")


#: Transformer LoRA text-encoder prefixes per family and file slot: (kohya, diffusers).
_FLOW_TE = {"sd3": {"clip_l": ("lora_te1", "text_encoder"), "clip_g": ("lora_te2", "text_encoder_2"),
                    "t5xxl": ("lora_te3", "text_encoder_3")},
            "flux": {"clip_l": ("lora_te1", "text_encoder"), "t5xxl": ("lora_te3", "text_encoder_2")}}
_FLOW_TE_LAYERS = (".self_attn.", ".mlp.", ".SelfAttention.", ".DenseReluDense.")


def _transformer_lora_tensors(shapes: Mapping[str, tuple[int, ...]], layout: Any, kind: str, rank: int,
                              seed: int) -> dict[str, torch.Tensor]:
    """An SD3/Flux LoRA: the blocks' linear layers (fused q/k/v, MLP, modulation) and the final adaLN.

    Kohya kinds use the original names (``lora_unet_double_blocks_0_img_attn_qkv``); ``diffusers-lora``
    is the same change on diffusers names (``transformer.transformer_blocks.0.attn.to_q.lora_A.weight``):
    the shared down matrix, the up rows of each part (halves swapped where diffusers swaps them) with
    alpha/rank folded in, as diffusers' converters write it.
    """
    from diffusion.families import flux, sd3

    rules = (sd3 if layout.family == "sd3" else flux).key_rules(layout.config)
    prefix = layout.prefix or ""
    tensors: dict[str, torch.Tensor] = {}
    for rule in rules:
        path, _, slot = rule.original.rpartition(".")
        shape = shapes.get(prefix + rule.original)
        if slot != "weight" or shape is None or len(shape) != 2:
            continue
        if "blocks." not in path and not path.startswith("final_layer.adaLN"):
            continue
        stem = "lora_unet_" + path.replace(".", "_")
        parts = _factors(stem, _Shape(shape), "lora" if kind == "diffusers-lora" else kind, rank, seed)
        if kind != "diffusers-lora":
            tensors.update({stem + k: v for k, v in parts.items()})
            continue
        up = parts[".lora_up.weight"].float() * (float(parts[".alpha"]) / rank)
        if rule.op == "swap":
            ups = [torch.cat(up.chunk(2, dim=0)[::-1], dim=0)]
        elif rule.op == "cat":
            ups = list(torch.split(up, list(rule.sizes), dim=0))
        else:
            ups = [up]
        for name, part_up in zip(rule.diffusers, ups, strict=True):
            dstem = "transformer." + name.removesuffix(".weight")
            tensors[dstem + ".lora_A.weight"] = parts[".lora_down.weight"]
            tensors[dstem + ".lora_B.weight"] = part_up.to(torch.float16)
    for slot, file_prefix in layout.text.items():
        kohya, diffusers = _FLOW_TE[layout.family].get(slot, (None, None))
        if kohya is None:
            continue
        for key, shape in sorted(shapes.items()):
            if not key.startswith(file_prefix) or not key.endswith(".weight") or len(shape) != 2 \
                    or not any(part in key for part in _FLOW_TE_LAYERS):
                continue
            path = key[len(file_prefix):].removesuffix(".weight")
            stem = f"{kohya}_{path.replace('.', '_')}"
            parts = _factors(stem, _Shape(shape), "lora" if kind == "diffusers-lora" else kind, rank, seed)
            if kind != "diffusers-lora":
                tensors.update({stem + k: v for k, v in parts.items()})
                continue
            up = parts[".lora_up.weight"].float() * (float(parts[".alpha"]) / rank)
            tensors[f"{diffusers}.{path}.lora_A.weight"] = parts[".lora_down.weight"]
            tensors[f"{diffusers}.{path}.lora_B.weight"] = up.to(torch.float16)
    return tensors


def lora_tensors(base: Path, kind: str, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a ``kind`` file for the checkpoint ``base`` (see the module docstring for the layouts)."""
    if kind not in KINDS:
        raise ValueError(f"unknown LoRA kind {kind!r}; expected one of {', '.join(KINDS)}")
    from diffusion.families.loader import detect_transformer

    try:
        with TensorFile(base) as file:
            shapes = dict(file.shapes)
    except CheckpointError as exc:
        raise ValueError(f"{base.name}: not a usable base checkpoint ({exc})") from None
    layout = detect_transformer(shapes)
    if layout is not None and layout.config is not None:
        return _transformer_lora_tensors(shapes, layout, "lora" if kind == "locon" else kind, rank, seed)
    arch, unet, texts = _base_models(base)
    unet_layers = dict(_layers(unet, resnets=kind == "locon"))
    ldm = unet_ldm_names([f"{name}.weight" for name in unet_layers], unet.config)
    tensors: dict[str, torch.Tensor] = {}

    def add(stem: str, layer: nn.Module) -> None:
        tensors.update({stem + part: value for part, value in _factors(stem, layer, kind, rank, seed).items()})

    for name, layer in unet_layers.items():
        if kind == "diffusers-lora":
            add(f"unet.{name}", layer)
        else:
            add("lora_unet_" + ldm[f"{name}.weight"].removesuffix(".weight").replace(".", "_"), layer)
    for encoder, model in texts.items():
        for name, layer in _layers(model, resnets=False):
            hf = name if name.startswith("text_model.") else "text_model." + name
            if kind == "diffusers-lora":
                add(f"{_DIFFUSERS_TE[encoder]}.{hf}", layer)
            else:
                add(f"{_KOHYA_TE[arch][encoder]}_{hf.replace('.', '_')}", layer)
    return tensors


def write_lora(out: Path, *, base: Path | None, rank: int = 4, seed: int = 0, kind: str = "lora",
               **_unused: Any) -> Path:
    """Write a seeded random ``kind`` file for the checkpoint ``base`` to ``out`` (atomically); returns ``out``."""
    if base is None:
        raise ValueError(f"a {kind} file is made for a checkpoint: give --base CHECKPOINT")
    tensors = lora_tensors(Path(base), kind, rank, seed)
    metadata = {"noodlebox.kind": kind, "noodlebox.rank": str(rank), "noodlebox.seed": str(seed),
                "noodlebox.base": Path(base).name}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as part:
        save_safetensors(tensors, part, metadata)
    return out


def _writer(kind: str) -> Any:
    def write(out: Path, *, base: Path | None, rank: int = 4, seed: int = 0, **rest: Any) -> Path:
        return write_lora(out, base=base, rank=rank, seed=seed, kind=kind)

    write.__name__ = write.__qualname__ = "write_" + kind.replace("-", "_")
    write.__doc__ = f"Write a seeded random {kind} file for ``base`` (``make-model --kind {kind}``)."
    return write


write_lora_kohya = _writer("lora")
write_locon = _writer("locon")
write_loha = _writer("loha")
write_lokr = _writer("lokr")
write_diffusers_lora = _writer("diffusers-lora")

