"""Key maps between original single-file layouts and diffusers, as data read both ways.

A transformer family's map is a list of :class:`Rule`: one original tensor and the diffusers
tensors it holds. ``copy`` is one-to-one; ``cat`` means the original is the diffusers
tensors concatenated on dim 0 (fused q/k/v, Flux's q/k/v/MLP ``linear1``), split back by
``sizes``; ``swap`` means the two halves are in the other order (the original adaLN
output is shift then scale, diffusers' scale then shift). The same list turns a
diffusers state dict into the original layout (synthetic checkpoints) and an original
file into diffusers keys (loading), so the two directions cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Rule:
    """One original tensor and where its parts live in diffusers."""

    original: str
    diffusers: tuple[str, ...]
    op: Literal["copy", "cat", "swap"] = "copy"
    sizes: tuple[int, ...] = ()


def linear(original: str, diffusers: str, bias: bool = True) -> list[Rule]:
    """Rules for one linear (or conv) layer: its weight and, if it has one, its bias."""
    names = ("weight", "bias") if bias else ("weight",)
    return [Rule(f"{original}.{n}", (f"{diffusers}.{n}",)) for n in names]


def fused(original: str, parts: Iterable[str], sizes: Iterable[int], bias: bool = True) -> list[Rule]:
    """Rules for a fused linear layer whose output rows are ``parts`` in order."""
    parts, sizes = tuple(parts), tuple(sizes)
    names = ("weight", "bias") if bias else ("weight",)
    return [Rule(f"{original}.{n}", tuple(f"{p}.{n}" for p in parts), "cat", sizes) for n in names]


def swapped(original: str, diffusers: str) -> list[Rule]:
    """Rules for an adaLN projection stored as (shift, scale) in the original, (scale, shift) in diffusers."""
    return [Rule(f"{original}.{n}", (f"{diffusers}.{n}",), "swap") for n in ("weight", "bias")]


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def to_original(state: Mapping[str, torch.Tensor], rules: Iterable[Rule], prefix: str = "") -> StateDict:
    """Diffusers weights to original keys (with ``prefix``); every diffusers key must be used."""
    out: StateDict = {}
    used: set[str] = set()
    for rule in rules:
        parts = [state[k] for k in rule.diffusers]
        used.update(rule.diffusers)
        if rule.op == "cat":
            out[prefix + rule.original] = torch.cat(parts, dim=0)
        elif rule.op == "swap":
            out[prefix + rule.original] = _swap_halves(parts[0])
        else:
            out[prefix + rule.original] = parts[0]
    left = sorted(set(state) - used)
    if left:
        raise KeyError(f"no original name for {len(left)} diffusers keys, e.g. {left[0]!r}")
    return out


def to_diffusers(checkpoint: Mapping[str, torch.Tensor], rules: Iterable[Rule], prefix: str = "") -> StateDict:
    """Original weights (keys under ``prefix``) to diffusers keys; a missing original key raises ``KeyError``."""
    out: StateDict = {}
    for rule in rules:
        tensor = checkpoint[prefix + rule.original]
        if rule.op == "cat":
            out.update(zip(rule.diffusers, torch.split(tensor, list(rule.sizes), dim=0), strict=True))
        elif rule.op == "swap":
            out[rule.diffusers[0]] = _swap_halves(tensor)
        else:
            out[rule.diffusers[0]] = tensor
    return out
