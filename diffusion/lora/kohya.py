"""LoRA and LoCon (kohya / LyCORIS "lora" layout), with DoRA: ``W + strength * alpha/rank * up @ down``.

Parts per module: ``lora_up`` (out, rank[, 1, 1]), ``lora_down`` (rank, in[, kh, kw]), an
optional ``alpha`` (scale ``alpha / rank``; 1 when absent), an optional ``lora_mid``
(LoCon's Tucker core, rank x rank x kh x kw, with a 1x1 ``lora_down``) and an optional
``dora_scale`` (DoRA's magnitude, on the output or the input axis).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def fit(diff: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``diff`` in the shape of ``weight`` (linear vs 1x1-conv layouts hold the same numbers), or a clear error."""
    if diff.shape == weight.shape:
        return diff
    if diff.numel() != weight.numel():
        raise ValueError(f"a patch of shape {tuple(diff.shape)} does not fit a weight of {tuple(weight.shape)}")
    return diff.reshape(weight.shape)


def add_diff(weight: torch.Tensor, diff: torch.Tensor, strength: float,
             dora_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``weight + strength * diff``; with ``dora_scale``, DoRA's renormalised form.

    DoRA: ``W' = m * (W + diff) / ||W + diff||`` (the norm per output row when ``m`` has the
    output's length, else per input column), then ``W + strength * (W' - W)``.
    """
    diff = fit(diff.to(weight.device, torch.float32), weight)
    if dora_scale is None:
        return weight.add_(diff, alpha=strength)
    scale = dora_scale.to(weight.device, torch.float32)
    calc = weight + diff
    if scale.shape[0] == calc.shape[0] and scale.numel() == calc.shape[0]:
        norm = calc.reshape(calc.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (calc.dim() - 1))
        scale = scale.reshape(norm.shape)
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1)
        norm = norm.reshape(1, -1, *[1] * (calc.dim() - 2))
        scale = scale.reshape(norm.shape)
    calc.mul_(scale / (norm + torch.finfo(torch.float32).eps))
    return weight.add_(calc.sub_(weight), alpha=strength)


def flat(tensor: torch.Tensor) -> torch.Tensor:
    """A factor as float32 rows (``out, rest``)."""
    return tensor.to(torch.float32).flatten(1)


@dataclass(frozen=True, eq=False)
class LoraAdapter:
    """``W + strength * alpha/rank * up @ down`` (LoCon: ``down`` combined with ``mid`` first)."""

    up: torch.Tensor
    down: torch.Tensor
    alpha: float | None = None
    mid: torch.Tensor | None = None
    dora_scale: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        """The inner dimension of the factors."""
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """``alpha / rank`` (1 without alpha)."""
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def numel(self) -> int:
        """Number of elements of the weight this adapter fits."""
        inner = self.down.shape[1] * (self.mid.shape[2] * self.mid.shape[3] if self.mid is not None
                                      else self.down[0].numel() // self.down.shape[1])
        return int(self.up.shape[0] * inner)

    def _down(self) -> torch.Tensor:
        """``down`` as float32, combined with LoCon's Tucker core when there is one."""
        down = self.down.to(torch.float32)
        if self.mid is not None:
            down = torch.einsum("ikhw,kj->ijhw", self.mid.to(torch.float32), flat(down))
        return down

    def low_rank(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """``(up, down, scale)`` as float32 matrices (``diff = scale * up @ down``), or None with DoRA.

        ``diffusion.patching`` adds such changes as one matrix product straight into the weight.
        """
        if self.dora_scale is not None:
            return None
        return flat(self.up), flat(self._down()), self.scale

    def diff(self) -> torch.Tensor:
        """``alpha/rank * up @ down`` as an ``(out, in[, kh, kw])`` tensor (flattened when unknown)."""
        down = self._down()
        product = flat(self.up) @ flat(down)
        return (product * self.scale).reshape(self.up.shape[0], *down.shape[1:])

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The weight with this LoRA added at ``strength``."""
        return add_diff(weight, self.diff(), strength, self.dora_scale)
