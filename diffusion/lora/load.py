"""Reading a LoRA-family file into weight adapters, and placing them on a MODEL and a CLIP.

:func:`read_lora` parses a file once into :class:`LoraFile`: adapters keyed by
``(stem, "weight" | "bias")``, independent of any model, so it can be cached per file and
a strength change re-parses nothing. :func:`lora_patches` maps the stems to one model's
parameter names (``diffusion.lora.keys``), checks that each adapter fits its weight, and
names what it could not place: one warning, as ComfyUI, and the rest applies. A file with
no LoRA-family weights, or whose layers fit nothing in the model, is a one-line
:class:`LoraError` naming the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import torch

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.patching import DiffAdapter, WeightAdapter

from . import diffusers_peft
from .keys import clip_stems, is_text_encoder_stem, unet_stems
from .kohya import LoraAdapter
from .lycoris import GloraAdapter, IA3Adapter, LohaAdapter, LokrAdapter
from .oft import BoftAdapter, OftAdapter
from .transformer import place, transformer_targets

log = logging.getLogger(__name__)

_KOHYA_PARTS = {".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid",
                ".alpha": "alpha", ".dora_scale": "dora_scale"}
_LYCORIS_PARTS = {f".{p}": p for p in (
    "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
    "oft_blocks", "rescale", "on_input", "diff", "diff_b", "w_norm", "b_norm")}
_LYCORIS_PARTS.update({f".{p}.weight": p for p in ("a1", "a2", "b1", "b2")})
#: Key suffix -> part name, longest first (so ``.lora_up.weight`` wins over ``.up.weight``, and both over ``.weight``).
_SUFFIXES = sorted({**_KOHYA_PARTS, **_LYCORIS_PARTS, **diffusers_peft.PARTS, ".weight": "ia3"}.items(),
                   key=lambda item: -len(item[0]))


class LoraError(ValueError):
    """A file that is no LoRA, or one for another model; the message is one line naming the file."""


@dataclass(frozen=True)
class LoraFile:
    """One file's adapters by ``(stem, "weight" | "bias")``, and the keys it holds that are no known part."""

    name: str
    adapters: dict[tuple[str, str], WeightAdapter]
    unparsed: tuple[str, ...] = ()


@dataclass
class LoraPatches:
    """A :class:`LoraFile` placed on one model: adapters by parameter name, per target, and what did not fit."""

    unet: dict[str, WeightAdapter] = field(default_factory=dict)
    clip: dict[str, WeightAdapter] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    misfits: list[str] = field(default_factory=list)


def _split(key: str) -> tuple[str, str] | None:
    for suffix, part in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return diffusers_peft.normalize_stem(key[: -len(suffix)]), part
    return None


def _alpha(parts: Mapping[str, torch.Tensor]) -> float | None:
    alpha = parts.get("alpha")
    return None if alpha is None else float(alpha.float().reshape(-1)[0])


def module_adapters(stem: str, parts: dict[str, torch.Tensor]) -> dict[tuple[str, str], WeightAdapter]:
    """The adapters one module's parts make (a module may carry a weight patch and a bias patch)."""
    out: dict[tuple[str, str], WeightAdapter] = {}
    alpha, dora = _alpha(parts), parts.get("dora_scale")
    if "up" in parts and "down" in parts:
        out[stem, "weight"] = LoraAdapter(parts["up"], parts["down"], alpha, parts.get("mid"), dora)
    elif "hada_w1_a" in parts:
        out[stem, "weight"] = LohaAdapter(parts["hada_w1_a"], parts["hada_w1_b"], parts["hada_w2_a"],
                                          parts["hada_w2_b"], alpha, parts.get("hada_t1"), parts.get("hada_t2"), dora)
    elif any(p.startswith("lokr_") for p in parts):
        out[stem, "weight"] = LokrAdapter(
            parts.get("lokr_w1"), parts.get("lokr_w1_a"), parts.get("lokr_w1_b"), parts.get("lokr_w2"),
            parts.get("lokr_w2_a"), parts.get("lokr_w2_b"), parts.get("lokr_t2"), alpha, dora)
    elif "a1" in parts and "b2" in parts:
        out[stem, "weight"] = GloraAdapter(parts["a1"], parts["a2"], parts["b1"], parts["b2"], alpha, dora)
    elif "oft_blocks" in parts and parts["oft_blocks"].dim() == 4:
        out[stem, "weight"] = BoftAdapter(parts["oft_blocks"], alpha, parts.get("rescale"))
    elif "oft_blocks" in parts:
        out[stem, "weight"] = OftAdapter(parts["oft_blocks"], alpha)  # its rescale is not applied (ComfyUI)
    elif "ia3" in parts and "on_input" in parts:
        out[stem, "weight"] = IA3Adapter(parts["ia3"], bool(parts["on_input"].reshape(-1)[0]))
    for part, slot in (("diff", "weight"), ("w_norm", "weight"), ("diff_b", "bias"), ("b_norm", "bias")):
        if part in parts and (stem, slot) not in out:
            out[stem, slot] = DiffAdapter(parts[part])
    return out


def read_lora(path: str | os.PathLike[str]) -> LoraFile:
    """Parse a LoRA / LoCon / LoHa / LoKr / GLoRA / IA3 / OFT / diff file (kohya, LyCORIS, diffusers, PEFT)."""
    path = Path(path)
    try:
        with TensorFile(path) as file:
            tensors = {key: file.get(key) for key in file.shapes}
    except CheckpointError as exc:
        raise LoraError(str(exc)) from None
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unparsed: list[str] = []
    for key, tensor in tensors.items():
        split = _split(key)
        if split is None:
            unparsed.append(key)
            continue
        stem, part = split
        grouped.setdefault(stem, {})[part] = tensor
    adapters: dict[tuple[str, str], WeightAdapter] = {}
    for stem, parts in grouped.items():
        try:
            made = module_adapters(stem, parts)
        except (KeyError, ValueError) as exc:
            raise LoraError(f"{path.name}: {stem}: incomplete or malformed adapter ({exc})") from None
        if not made:
            unparsed.extend(f"{stem}.{part}" for part in parts)
        adapters.update(made)
    if not adapters:
        raise LoraError(f"{path.name}: not a LoRA file (none of its {len(tensors)} tensors is a LoRA, LyCORIS or diff "
                        "weight)")
    return LoraFile(path.name, adapters, tuple(sorted(unparsed)))


def fits(adapter: WeightAdapter, shape: tuple[int, ...]) -> bool:
    """Whether ``adapter`` can patch a weight of ``shape`` (same element count, rows or channels)."""
    if isinstance(adapter, (LoraAdapter, LohaAdapter, LokrAdapter, GloraAdapter)):
        return adapter.numel() == prod(shape)
    if isinstance(adapter, DiffAdapter):
        return adapter.diff.numel() == prod(shape)
    if isinstance(adapter, (OftAdapter, BoftAdapter)):
        return adapter.numel_rows() == shape[0]
    if isinstance(adapter, IA3Adapter):
        return len(shape) > int(adapter.on_input) and adapter.scale.numel() == shape[int(adapter.on_input)]
    return True


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def lora_patches(lora: LoraFile, unet: Any = None, clip: Any = None) -> LoraPatches:
    """Place ``lora``'s adapters on ``unet`` (a ``UNetModel`` or an SD3/Flux ``TransformerModel``) and ``clip`` (a
    ``ClipTextEncoder`` or ``FlowTextEncoder``); either may be None.

    Text-encoder layers are skipped without a word when ``clip`` is None (model-only
    loaders). Raises :class:`LoraError` when fewer than half of its layers fit (a LoRA for
    another architecture: SDXL and SD1 share some layer names, so a few would fit by chance).
    """
    targets: list[tuple[str, dict[str, tuple[str, str]], dict[str, tuple[int, ...]], dict[str, WeightAdapter]]] = []
    out = LoraPatches()
    transformer = unet is not None and getattr(unet, "family", None) is not None  # SD3 / Flux
    if transformer:
        layers, layer_shapes = transformer_targets(unet), _shapes(unet.model)
    elif unet is not None:
        targets.append(("", unet_stems(unet.model), _shapes(unet.model), out.unet))
    if clip is not None:
        for slot in ("clip_l", "clip_g", "t5"):
            module = getattr(clip, slot, None)
            if module is not None:
                targets.append((slot + ".", clip_stems(clip.kind, slot, module), _shapes(module), out.clip))
    placed_count = 0
    for (stem, slot), adapter in lora.adapters.items():
        layer = layers.get((stem, slot)) if transformer else None
        if layer is not None:
            parts = place(adapter, layer, layer_shapes, fits)
            if parts is None:
                out.misfits.append(stem)
            else:
                out.unet.update(parts)
                placed_count += 1
            continue
        placed = False
        for prefix, stems, shapes, into in targets:
            found = stems.get(stem)
            if found is None:
                continue
            name = f"{found[1]}.{slot}"
            if name not in shapes:
                continue
            placed = True
            if fits(adapter, shapes[name]):
                into[prefix + name] = adapter
                placed_count += 1
            else:
                out.misfits.append(stem)
            break
        if not placed and (clip is not None or not is_text_encoder_stem(stem)):
            out.unknown.append(f"{stem}.{slot}")
    failed = len(out.unknown) + len(out.misfits)
    if failed > placed_count:
        arch = getattr(unet, "arch", None) or getattr(clip, "kind", "this")
        raise LoraError(f"{lora.name}: made for another model (only {placed_count} of its {placed_count + failed} "
                        f"layers fit this {arch} model)")
    missing = sorted(out.unknown) + sorted(f"{s} (shape)" for s in out.misfits) + list(lora.unparsed)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        log.warning("%s: %d LoRA keys not loaded: %s", lora.name, len(missing), shown)
    return out
