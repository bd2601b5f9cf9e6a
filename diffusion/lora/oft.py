"""OFT (orthogonal fine-tuning, LyCORIS layout): the weight's output rows rotated block by block.

Parts: ``oft_blocks`` (``blocks, size, size``: ``blocks * size`` output rows) and an optional
``alpha`` (COFT's constraint: the skew matrix is scaled down to that norm when larger).
``Q = B - Bᵀ``, ``R = (I + Q)(I - Q)⁻¹`` (Cayley, orthogonal), and per block
``W' = W + strength * (Rᵀ - I) W``.
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
        blocks = self.blocks.to(torch.float32)
        skew = blocks - blocks.transpose(1, 2)
        if self.alpha:
            norm = skew.norm() + 1e-8
            if norm > self.alpha:
                skew = skew * (self.alpha / norm)
        eye = torch.eye(blocks.shape[1], dtype=torch.float32).expand_as(blocks)
        return (eye + skew) @ torch.linalg.inv(eye - skew)

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """``W + strength * (Rᵀ - I) W`` block by block over the output rows."""
        count, size = int(self.blocks.shape[0]), int(self.blocks.shape[1])
        if count * size != weight.shape[0]:
            raise ValueError(f"OFT blocks {count}x{size} do not fit a weight of {tuple(weight.shape)}")
        rotation = self.rotation().to(weight.device)
        eye = torch.eye(size, dtype=torch.float32, device=weight.device)
        grouped = weight.reshape(count, size, -1)
        change = torch.einsum("knm,kn...->km...", (rotation - eye) * strength, grouped)
        return weight.add_(change.reshape(weight.shape))
