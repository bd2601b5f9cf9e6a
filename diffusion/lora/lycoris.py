"""LyCORIS adapters: LoHa (Hadamard product), LoKr (Kronecker product), IA3 (per-channel scaling), GLoRA.

Closed forms (``strength`` s, ``alpha / rank`` a):

- LoHa: ``W + s * a * (w1_a @ w1_b) * (w2_a @ w2_b)``; with Tucker cores ``t1``/``t2``
  each factor is ``einsum("ijkl,jr,ip->prkl", t, w_b, w_a)``. The rank is ``w1_b``'s rows.
- LoKr: ``W + s * a * kron(w1, w2)``, each of ``w1``/``w2`` stored whole or as ``_a @ _b``
  (``w2`` also with a Tucker core ``t2``); ``a`` is 1 unless a factor is decomposed.
- IA3: ``W + s * W * w`` with ``w`` per output channel (per input channel with ``on_input``).
- GLoRA: ``W + s * a * (b2 @ b1 + W @ a2 @ a1)``; the rank is ``a1``'s rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch

from .kohya import add_diff, flat


def _tucker(core: torch.Tensor, w_b: torch.Tensor, w_a: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ijkl,jr,ip->prkl", core.to(torch.float32), flat(w_b), flat(w_a))


def _scale(alpha: float | None, rank: int) -> float:
    return 1.0 if alpha is None else alpha / rank


@dataclass(frozen=True, eq=False)
class LohaAdapter:
    """LoHa: the Hadamard product of two low-rank products."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    alpha: float | None = None
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    dora_scale: torch.Tensor | None = None

    def _factor(self, w_a: torch.Tensor, w_b: torch.Tensor, core: torch.Tensor | None) -> torch.Tensor:
        if core is not None:
            return _tucker(core, w_b, w_a)
        return flat(w_a) @ flat(w_b)

    def numel(self) -> int:
        """Number of elements of the weight this adapter fits."""
        if self.t1 is None:
            return int(self.w1_a.shape[0] * self.w1_b.shape[1])
        # With Tucker cores the factors are stored (rank, out) and (rank, in).
        return int(self.w1_a.shape[1] * self.w1_b.shape[1] * self.t1.shape[2] * self.t1.shape[3])

    def diff(self) -> torch.Tensor:
        """``alpha/rank * (w1_a @ w1_b) * (w2_a @ w2_b)``."""
        scale = _scale(self.alpha, int(self.w1_b.shape[0]))
        return self._factor(self.w1_a, self.w1_b, self.t1) * self._factor(self.w2_a, self.w2_b, self.t2) * scale

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The weight with this LoHa added at ``strength``."""
        return add_diff(weight, self.diff(), strength, self.dora_scale)


@dataclass(frozen=True, eq=False)
class LokrAdapter:
    """LoKr: the Kronecker product of two (possibly low-rank) factors."""

    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None
    dora_scale: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.w1 is None and (self.w1_a is None or self.w1_b is None)) or (
                self.w2 is None and (self.w2_a is None or self.w2_b is None)):
            raise ValueError("a LoKr module needs lokr_w1 (or lokr_w1_a and _b) and lokr_w2 (or lokr_w2_a and _b)")

    def _w1(self) -> torch.Tensor:
        if self.w1 is not None:
            return self.w1.to(torch.float32)
        return flat(self.w1_a) @ flat(self.w1_b)  # type: ignore[arg-type]

    def _w2(self) -> torch.Tensor:
        if self.w2 is not None:
            return self.w2.to(torch.float32)
        if self.t2 is not None:
            return _tucker(self.t2, self.w2_b, self.w2_a)  # type: ignore[arg-type]
        return flat(self.w2_a) @ flat(self.w2_b)  # type: ignore[arg-type]

    @property
    def scale(self) -> float:
        """``alpha / rank`` of the decomposed factor (1 when both are stored whole)."""
        if self.w1_b is not None:
            return _scale(self.alpha, int(self.w1_b.shape[0]))
        if self.w2_b is not None:
            return _scale(self.alpha, int(self.w2_b.shape[0]))
        return 1.0

    def numel(self) -> int:
        """Number of elements of the weight this adapter fits."""
        w1 = self.w1.shape if self.w1 is not None else (self.w1_a.shape[0], self.w1_b.shape[1])  # type: ignore[union-attr]
        if self.w2 is not None:
            w2 = tuple(self.w2.shape)
        elif self.t2 is not None:
            w2 = (self.w2_a.shape[1], self.w2_b.shape[1], self.t2.shape[2], self.t2.shape[3])  # type: ignore[union-attr]
        else:
            w2 = (self.w2_a.shape[0], self.w2_b.shape[1])  # type: ignore[union-attr]
        return int(prod(w1) * prod(w2))

    def diff(self) -> torch.Tensor:
        """``alpha/rank * kron(w1, w2)``."""
        w1, w2 = self._w1(), self._w2()
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return torch.kron(w1.contiguous(), w2.contiguous()) * self.scale

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The weight with this LoKr added at ``strength``."""
        return add_diff(weight, self.diff(), strength, self.dora_scale)


@dataclass(frozen=True, eq=False)
class IA3Adapter:
    """IA3: each output channel (or input channel, ``on_input``) of the weight scaled by ``1 + strength * w``."""

    scale: torch.Tensor
    on_input: bool = False

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """``W + strength * W * w`` along the chosen axis."""
        axis = 1 if self.on_input else 0
        shape = [1] * weight.dim()
        shape[axis] = weight.shape[axis]
        w = self.scale.to(weight.device, torch.float32)
        if w.numel() != weight.shape[axis]:
            raise ValueError(f"an IA3 vector of {w.numel()} does not fit a weight of {tuple(weight.shape)}")
        return weight.add_(weight * w.reshape(shape), alpha=strength)


@dataclass(frozen=True, eq=False)
class GloraAdapter:
    """GLoRA (LyCORIS layout): ``W + strength * alpha/rank * (b2 @ b1 + W @ a2 @ a1)``.

    Stored as linear layers' weights: ``a1`` (rank, in), ``a2`` (in, rank), ``b1`` (rank, in),
    ``b2`` (out, rank); convolution weights take part flattened to ``(out, in * kh * kw)``.
    """

    a1: torch.Tensor
    a2: torch.Tensor
    b1: torch.Tensor
    b2: torch.Tensor
    alpha: float | None = None
    dora_scale: torch.Tensor | None = None

    def numel(self) -> int:
        """Number of elements of the weight this adapter fits."""
        return int(self.b2.shape[0] * self.b1[0].numel())

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The weight with this GLoRA added at ``strength`` (the change depends on the weight itself)."""
        scale = _scale(self.alpha, int(self.a1.shape[0]))
        device = weight.device
        a1, a2, b1, b2 = (flat(t).to(device) for t in (self.a1, self.a2, self.b1, self.b2))
        diff = (b2 @ b1 + (weight.reshape(weight.shape[0], -1) @ a2) @ a1) * scale
        return add_diff(weight, diff.reshape(weight.shape), strength, self.dora_scale)
