"""Model merging as weight patches: one model's (patched) weights added to another's, with ratios.

ComfyUI's merge nodes add, for every weight, "the other model's weight" as a patch with a
strength, after scaling the first model's own weight (``strength_model``):
``ratio * W1 + (1 - ratio) * W2`` (simple, per block), ``W1 + W2`` (add),
``m * (W1 - W2)`` (subtract). The other model's weight is computed when the merge is
applied, from its original and its own patches, so a merge of LoRA'd models merges the
LoRA'd weights and nothing is copied until the merged model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from diffusion.convert import unet_ldm_names
from diffusion.models import UNetModel
from diffusion.patching import PatchEntry, WeightPatches, calculate_weight, original_weight
from diffusion.text import ClipTextEncoder

log = logging.getLogger(__name__)

#: CLIP keys ComfyUI's CLIP merges leave alone.
_CLIP_SKIP_SUFFIXES = (".position_ids", ".logit_scale")


@dataclass(frozen=True, eq=False)
class OtherWeight:
    """Another module's weight (with that module's own patches) as a patch: ``W + strength * W_other``."""

    module: nn.Module
    key: str
    entries: tuple[PatchEntry, ...] = ()

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """Add ``strength`` times the other weight; a weight of another shape is skipped with a warning."""
        other = calculate_weight(original_weight(self.module, self.key), self.entries)
        if other.shape != weight.shape:
            log.warning("merge: %s has shape %s in the other model, %s here; not merged", self.key,
                        tuple(other.shape), tuple(weight.shape))
            return weight
        return weight.add_(other.to(weight.device), alpha=strength)


def _weights(module: nn.Module, patches: WeightPatches, skip: tuple[str, ...] = ()) -> dict[str, OtherWeight]:
    return {key: OtherWeight(module, key, tuple(patches.get(key, ()))) for key, _ in module.named_parameters()
            if not key.endswith(skip)}


def _merge(patches: WeightPatches, others: Mapping[str, OtherWeight], own: Mapping[str, object],
           strengths: Callable[[str], tuple[float, float]]) -> dict[str, tuple[PatchEntry, ...]]:
    out = dict(patches)
    for key, adapter in others.items():
        if key in own:
            strength, strength_model = strengths(key)
            out[key] = (*out.get(key, ()), PatchEntry(adapter, strength, strength_model))
    return out


def merge_models(model1: UNetModel, model2: UNetModel, strengths: Callable[[str], tuple[float, float]]) -> UNetModel:
    """``model1`` with each weight of ``model2`` patched in at ``strengths(ldm_key) = (strength, strength_model)``.

    Keys are given to ``strengths`` in the LDM layout (``input_blocks.4.1.proj_in.weight``),
    the names ComfyUI's block-merge inputs use.
    """
    own = dict(model1.model.named_parameters())
    names = unet_ldm_names(own, model1.model.config)
    out = model1.clone()
    out.weight_patches = _merge(model1.weight_patches, _weights(model2.model, model2.weight_patches), own,
                                lambda key: strengths(names[key]))
    return out


def block_ratios(ratios: Mapping[str, float]) -> Callable[[str], tuple[float, float]]:
    """ComfyUI's block merge rule: the longest name prefix in ``ratios`` picks the ratio, else the first one.

    ``ratio`` is the share of the first model: strength ``1 - ratio`` for the other weight.
    """
    default = next(iter(ratios.values()))
    prefixes = sorted(ratios, key=len, reverse=True)

    def strengths(key: str) -> tuple[float, float]:
        ratio = next((ratios[p] for p in prefixes if key.startswith(p)), default)
        return 1.0 - ratio, ratio

    return strengths


def merge_clips(clip1: ClipTextEncoder, clip2: ClipTextEncoder, strength: float,
                strength_model: float) -> ClipTextEncoder:
    """``clip1`` with ``clip2``'s text-model weights patched in (slots both have; position ids left alone)."""
    others: dict[str, OtherWeight] = {}
    own: dict[str, object] = {}
    for slot in ("clip_l", "clip_g", "t5"):  # t5: SD3/Flux text encoders
        first, second = getattr(clip1, slot, None), getattr(clip2, slot, None)
        if first is None or second is None:
            continue
        for key, weight in _weights(second, clip2.slot_patches(slot), _CLIP_SKIP_SUFFIXES).items():
            others[f"{slot}.{key}"] = weight
        own.update({f"{slot}.{k}": v for k, v in first.named_parameters()})
    patches = _merge(clip1.weight_patches, others, own, lambda _key: (strength, strength_model))
    return clip1.with_weight_patches(patches)


def merge_transformers(model1: object, model2: object,
                       strengths: Callable[[str], tuple[float, float]]) -> object:
    """An SD3/Flux ``model1`` with ``model2``'s weights patched in at ``strengths(original_key)``.

    Keys are given to ``strengths`` in the original (ComfyUI) layout, e.g. ``joint_blocks.3.x_block.mlp.fc1.weight``;
    a diffusers tensor split from a fused original takes that original's name. Both models must be
    of one family and one config, else ``ValueError``.
    """
    from diffusion.families import flux, sd3

    family1, family2 = getattr(model1, "family", None), getattr(model2, "family", None)
    if family1 != family2 or getattr(model1, "config", None) != getattr(model2, "config", None):
        raise ValueError(f"cannot merge a {family1 or 'UNet'} model with a {family2 or 'UNet'} model of another shape")
    rules = {"sd3": sd3.key_rules, "flux": flux.key_rules}[family1](model1.config)  # type: ignore[attr-defined]
    names = {part: rule.original for rule in rules for part in rule.diffusers}
    own = dict(model1.model.named_parameters())  # type: ignore[attr-defined]
    out = model1.clone()  # type: ignore[attr-defined]
    out.weight_patches = _merge(model1.weight_patches,  # type: ignore[attr-defined]
                                _weights(model2.model, model2.weight_patches), own,  # type: ignore[attr-defined]
                                lambda key: strengths(names.get(key, key)))
    return out
