"""Scaling attention projections (UNetSelfAttentionMultiply and kin) as weight patches.

ComfyUI multiplies the q/k/v/out projection weights and biases of the chosen attention by a
factor: a patch that keeps the weight, on top of ``strength_model`` = the factor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from diffusion.patching import PatchEntry, WeightPatches


@dataclass(frozen=True, eq=False)
class Unchanged:
    """A patch that leaves the weight as it is (its entry's ``strength_model`` does the work)."""

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The weight itself."""
        return weight


_UNCHANGED = Unchanged()


def scaled_projections(patches: WeightPatches, keys: Iterable[str],
                       factors: Mapping[str, float]) -> dict[str, tuple[PatchEntry, ...]]:
    """``patches`` plus, for each key ending in ``<name>.weight`` / ``<name>.bias``, a scale by ``factors[name]``."""
    out = dict(patches)
    for key in keys:
        stem, _, kind = key.rpartition(".")
        if kind not in ("weight", "bias"):
            continue
        for name, factor in factors.items():
            if stem.endswith(name):
                out[key] = (*out.get(key, ()), PatchEntry(_UNCHANGED, 0.0, factor))
    return out
