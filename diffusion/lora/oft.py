"""OFT and BOFT (orthogonal fine-tuning, LyCORIS layout): the weight's output rows rotated.

OFT parts: ``oft_blocks`` (``blocks, size, size``: ``blocks * size`` output rows) and an optional
``alpha`` (COFT's constraint: the skew matrix is scaled down to that norm when larger).
``Q = B - Bᵀ``, ``R = (I + Q)(I - Q)⁻¹`` (Cayley, orthogonal), and per block
``W' = W + strength² * (Rᵀ - I) W``: ComfyUI scales the change by the strength twice, and so do
we, for its pixels at strengths other than 1. A ``rescale`` beside OFT blocks is read and not
applied, as in ComfyUI.

BOFT (butterfly OFT) parts: ``oft_blocks`` with four axes (``levels, blocks, size, size``), an
optional ``rescale`` (per output row) and ``alpha`` (the same constraint, over all levels). Level
``i`` regroups the rows in a butterfly pattern (pairs ``2**i * size / 2`` rows apart), rotates each
group of ``size`` rows by ``R_i`` blended with the identity by the strength, and restores the
order; the rotated weight, times ``rescale``, gives the change, added times the strength.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class OftAdapter:
    """Block-diagonal orthogonal rotation of the weight's output rows."""

    blocks: torch.Tensor
    alpha: float | None = None

    def numel_rows(self) -> int:
        """Output rows of the weight this adapter fits."""
        return int(self.blocks.shape[0] * self.blocks.shape[1])

    def rotation(self) -> torch.Tensor:
        """The ``(blocks, size, size)`` orthogonal matrices ``R``."""
        return cayley(self.blocks, self.alpha)

    def change(self, weight: torch.Tensor) -> torch.Tensor:
        """``(Rᵀ - I) W`` block by block over the output rows (differentiable in the blocks)."""
        count, size = int(self.blocks.shape[0]), int(self.blocks.shape[1])
        if count * size != weight.shape[0]:
            raise ValueError(f"OFT blocks {count}x{size} do not fit a weight of {tuple(weight.shape)}")
        rotation = self.rotation().to(weight.device)
        eye = torch.eye(size, dtype=torch.float32, device=weight.device)
        grouped = weight.to(torch.float32).reshape(count, size, -1)
        return torch.einsum("knm,kn...->km...", rotation - eye, grouped).reshape(weight.shape)

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """``W + strength² * (Rᵀ - I) W`` block by block over the output rows."""
        return weight.add_(self.change(weight).to(weight.dtype), alpha=strength * strength)


def cayley(blocks: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """``(I + Q)(I - Q)⁻¹`` for ``Q = B - Bᵀ`` over the last two axes, ``Q`` scaled down to norm ``alpha``."""
    blocks = blocks.to(torch.float32)
    skew = blocks - blocks.transpose(-1, -2)
    if alpha:
        norm = skew.norm() + 1e-8
        if norm > alpha:
            skew = skew * (alpha / norm)
    eye = torch.eye(blocks.shape[-1], dtype=torch.float32).expand_as(blocks)
    return (eye + skew) @ torch.linalg.inv(eye - skew)


@dataclass(frozen=True, eq=False)
class BoftAdapter:
    """Butterfly orthogonal rotation of the weight's output rows (LyCORIS BOFT)."""

    blocks: torch.Tensor
    alpha: float | None = None
    rescale: torch.Tensor | None = None

    def numel_rows(self) -> int:
        """Output rows of the weight this adapter fits."""
        return int(self.blocks.shape[1] * self.blocks.shape[2])

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """``W + strength * (rescale * butterfly(W) - W)``, each level's rotation blended by the strength."""
        levels, count, size = (int(n) for n in self.blocks.shape[:3])
        rows = weight.shape[0]
        if count * size != rows or size % 2 or rows % (2 ** levels * (size // 2)):
            raise ValueError(f"BOFT blocks {levels}x{count}x{size} do not fit a weight of {tuple(weight.shape)}")
        rotations = cayley(self.blocks, self.alpha).to(weight.device)
        eye = torch.eye(size, dtype=torch.float32, device=weight.device)
        x = weight.to(torch.float32)
        for level in range(levels):
            rotation = rotations[level]
            if strength != 1:
                rotation = rotation * strength + eye * (1 - strength)
            span = 2 ** level * (size // 2)
            # Rows r and r + span (within each run of 2 * span) meet in one group of ``size`` rows.
            grouped = x.unflatten(0, (-1, 2, span)).transpose(1, 2).flatten(0, 2).unflatten(0, (count, size))
            grouped = torch.einsum("kij,kj...->ki...", rotation, grouped)
            x = grouped.flatten(0, 1).unflatten(0, (-1, span, 2)).transpose(1, 2).flatten(0, 2)
        if self.rescale is not None:
            x = x * self.rescale.to(x.device, torch.float32).reshape(rows, *[1] * (x.dim() - 1))
        return weight.add_((x - weight).to(weight.dtype), alpha=strength)
