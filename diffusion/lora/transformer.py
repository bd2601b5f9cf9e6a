"""LoRA-family files on the SD3/SD3.5 (MMDiT) and Flux.1 transformers, in every spelling trainers write.

Our transformers are diffusers modules; files name their layers either by diffusers paths
(``transformer.transformer_blocks.0.attn.to_q`` from diffusers / PEFT / ai-toolkit,
``lora_transformer_...`` from some kohya forks) or by the original single-file paths
(kohya / sd-scripts ``lora_unet_double_blocks_0_img_attn_qkv``, ComfyUI's
``diffusion_model.double_blocks.0.img_attn.qkv``). The original -> diffusers map is the
family's key rules (``diffusion.families.keymap``), the same data the checkpoint loader
uses, so the two cannot disagree. Three kinds of original layer:

- ``copy``: one diffusers layer; the adapter goes on it as it is;
- ``cat``: a fused layer (q/k/v, Flux's q/k/v/MLP ``linear1``) whose output rows are several
  diffusers layers. Each part gets the rows of the adapter's change that are its own: a
  LoRA's ``up`` rows (exact, and still a low-rank patch), a diff's rows, and for the other
  adapters (LoHa, LoKr, GLoRA, IA3, OFT) the change computed on the fused shape with this
  part's weight in its rows. That is exact for every change where an output row depends only
  on that row of the weight: all of those, OFT when its blocks do not cross a part boundary,
  DoRA when its magnitude is per output row. DoRA normalised per input column, OFT blocks
  across a boundary and BOFT (its butterfly mixes distant rows) need the sibling layers'
  weights too; they are reported as not loaded;
- ``swap``: an adaLN projection whose two halves are in the other order; the change is
  computed on the weight in the original order and swapped back (exact for any adapter).

Derived adapters are made once per file adapter (weakly cached), so an unchanged LoRA node
keeps the applied weights and a strength change recomputes only its own keys.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffusion.families.keymap import Rule
from diffusion.patching import DiffAdapter, WeightAdapter

from .keys import _cached
from .kohya import LoraAdapter
from .lycoris import IA3Adapter
from .oft import BoftAdapter, OftAdapter


@dataclass(frozen=True)
class Target:
    """Where one file layer's change goes: diffusers parameter names, and how they make the original."""

    params: tuple[str, ...]
    op: str = "copy"
    sizes: tuple[int, ...] = ()


#: ``(stem, slot) -> Target``; slot is ``weight`` or ``bias``.
TargetMap = dict[tuple[str, str], Target]


def _rules(model: Any) -> list[Rule]:
    from diffusion.families import flux, sd3

    return {"sd3": sd3.key_rules, "flux": flux.key_rules}[model.family](model.config)


def transformer_targets(model: Any) -> TargetMap:
    """Every ``(stem, slot)`` a LoRA file may use for a layer of ``model`` (a ``TransformerModel``)."""
    def build() -> TargetMap:
        out: TargetMap = {}

        def add(stems: tuple[str, ...], slot: str, target: Target) -> None:
            for stem in stems:
                out.setdefault((stem, slot), target)

        for rule in _rules(model):
            path, _, slot = rule.original.rpartition(".")
            slot = "weight" if slot == "scale" else slot  # RMSNorm scales are the diffusers norms' weights
            if slot not in ("weight", "bias"):
                continue
            flat = path.replace(".", "_")
            add((f"lora_unet_{flat}", f"lycoris_{flat}", f"diffusion_model.{path}", f"model.diffusion_model.{path}"),
                slot, Target(rule.diffusers, rule.op, rule.sizes))
            for name in rule.diffusers:  # the diffusers spellings name one diffusers layer each
                dpath, _, dslot = name.rpartition(".")
                flat = dpath.replace(".", "_")
                add((f"transformer.{dpath}", f"base_model.model.{dpath}", dpath, f"lora_transformer_{flat}",
                     f"lora_unet_{flat}"), dslot, Target((name,)))
        return out

    return _cached(model.model, f"transformer:{model.family}", build)  # type: ignore[arg-type]


# -- adapters for a part of a fused layer, and for a swapped one ----------------------------------------


@dataclass(frozen=True, eq=False)
class RowsOf:
    """Rows ``start : start + rows`` of ``adapter``'s change to a fused weight of ``full_rows`` rows."""

    adapter: WeightAdapter
    start: int
    full_rows: int

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The change on the fused shape, this weight in its rows (zeros elsewhere), cut back to its rows."""
        rows = weight.shape[0]
        full = weight.new_zeros((self.full_rows, *weight.shape[1:]))
        full[self.start:self.start + rows] = weight
        changed = self.adapter.apply(full, strength)
        return weight.copy_(changed[self.start:self.start + rows])


@dataclass(frozen=True, eq=False)
class SwappedHalves:
    """``adapter``'s change to a weight stored with its two row halves in the other order."""

    adapter: WeightAdapter

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """Swap to the file's order, apply, swap back."""
        changed = self.adapter.apply(_swap(weight).contiguous(), strength)
        return weight.copy_(_swap(changed))


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _per_row(dora: torch.Tensor | None, rows: int) -> bool:
    return dora is not None and dora.shape[0] == rows and dora.numel() == rows


def _slice(adapter: WeightAdapter, start: int, length: int, full_rows: int) -> WeightAdapter | None:
    """``adapter``'s change for rows ``start : start + length`` of a fused layer, or None where that is not exact."""
    if isinstance(adapter, BoftAdapter):
        return None  # its butterfly mixes rows across the parts
    stop = start + length
    if isinstance(adapter, LoraAdapter):
        if adapter.dora_scale is None:
            return dataclasses.replace(adapter, up=adapter.up[start:stop])
        if _per_row(adapter.dora_scale, full_rows):
            return dataclasses.replace(adapter, up=adapter.up[start:stop], dora_scale=adapter.dora_scale[start:stop])
        return None
    if isinstance(adapter, DiffAdapter):
        return DiffAdapter(adapter.diff.reshape(full_rows, -1)[start:stop])
    if isinstance(adapter, IA3Adapter) and not adapter.on_input:
        return IA3Adapter(adapter.scale.reshape(-1)[start:stop])
    if isinstance(adapter, OftAdapter):
        size = int(adapter.blocks.shape[1])
        if start % size or length % size:
            return None
    elif getattr(adapter, "dora_scale", None) is not None and not _per_row(adapter.dora_scale, full_rows):
        return None
    return RowsOf(adapter, start, full_rows)


def _swapped(adapter: WeightAdapter) -> WeightAdapter:
    if isinstance(adapter, LoraAdapter) and (adapter.dora_scale is None or _per_row(adapter.dora_scale,
                                                                                    adapter.up.shape[0])):
        dora = None if adapter.dora_scale is None else _swap(adapter.dora_scale)
        return dataclasses.replace(adapter, up=_swap(adapter.up), dora_scale=dora)
    if isinstance(adapter, DiffAdapter):
        return DiffAdapter(_swap(adapter.diff))
    return SwappedHalves(adapter)


_DERIVED: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], WeightAdapter | None]] = weakref.WeakKeyDictionary()
_DERIVED_LOCK = threading.Lock()


def _derived(adapter: WeightAdapter, key: tuple[Any, ...], make: Callable[[], WeightAdapter | None]) -> Any:
    with _DERIVED_LOCK:
        per = _DERIVED.setdefault(adapter, {})
        if key not in per:
            per[key] = make()
        return per[key]


def place(adapter: WeightAdapter, target: Target, shapes: Mapping[str, tuple[int, ...]],
          fits: Callable[[WeightAdapter, tuple[int, ...]], bool]) -> dict[str, WeightAdapter] | None:
    """``{parameter: adapter}`` putting ``adapter`` on ``target``, or None when it does not fit (or not exactly)."""
    if any(p not in shapes for p in target.params):
        return None
    first = shapes[target.params[0]]
    if target.op == "cat":
        full = (sum(target.sizes), *first[1:])
        if not fits(adapter, full):
            return None
        out: dict[str, WeightAdapter] = {}
        start = 0
        for param, size in zip(target.params, target.sizes, strict=True):
            part = _derived(adapter, ("rows", start, size, full[0]), lambda s=start, n=size: _slice(adapter, s, n,
                                                                                                    full[0]))
            if part is None:
                return None
            out[param] = part
            start += size
        return out
    if not fits(adapter, first):
        return None
    if target.op == "swap":
        return {target.params[0]: _derived(adapter, ("swap",), lambda: _swapped(adapter))}
    return {target.params[0]: adapter}
