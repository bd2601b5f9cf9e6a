"""HyperTile: self-attention run on tiles of the image's tokens instead of on all of them.

The queries of the chosen depths are cut into ``nh x nw`` tiles (a tile count picked among the
largest divisors of the side, at random from torch's global generator as ComfyUI does), so each
tile attends to its own batch entry; the output patch puts the tokens back in raster order.
ComfyUI tiles only the queries: keys and values keep the whole sequence and are split into
the same number of batch entries by the attention's reshape, which is kept here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch


def random_divisor(value: int, min_value: int, max_options: int = 1) -> int:
    """``value // d`` for one of the ``max_options`` smallest divisors ``d >= min_value`` of ``value``."""
    min_value = min(min_value, value)
    divisors = [i for i in range(min_value, value + 1) if value % i == 0]
    counts = [value // d for d in divisors[:max_options]]
    index = int(torch.randint(low=0, high=len(counts) - 1, size=(1,)).item()) if len(counts) > 1 else 0
    return counts[index]


def hypertile_patches(tile_size: int, swap_size: int, max_depth: int,
                      scale_depth: bool) -> tuple[Callable[..., Any], Callable[..., torch.Tensor]]:
    """``(attn1_patch, attn1_output_patch)`` tiling self-attention at ``max_depth + 1`` resolutions."""
    latent_tile = max(32, tile_size) // 8
    pending: list[tuple[int, int, int, int]] = []

    def tile_in(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                extra: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pending.clear()  # a pair left over from a call that failed between the two patches
        shape = extra["original_shape"]
        sizes = [(shape[-2] / 2 ** i) * (shape[-1] / 2 ** i) for i in range(max_depth + 1)]
        tokens = q.shape[-2]
        if tokens not in sizes:
            return q, k, v
        aspect = shape[-1] / shape[-2]
        h, w = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
        factor = 2 ** sizes.index(tokens) if scale_depth else 1
        nh = random_divisor(h, latent_tile * factor, swap_size)
        nw = random_divisor(w, latent_tile * factor, swap_size)
        if nh * nw > 1:
            b, _, c = q.shape
            th, tw = h // nh, w // nw
            q = q.reshape(b, nh, th, nw, tw, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, th * tw, c)
            pending.append((nh, nw, th, tw))
        return q, k, v

    def tile_out(out: torch.Tensor, extra: Mapping[str, Any]) -> torch.Tensor:
        if not pending:
            return out
        nh, nw, th, tw = pending.pop()
        c = out.shape[-1]
        b = out.shape[0] // (nh * nw)
        return out.reshape(b, nh, nw, th, tw, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * th * nw * tw, c)

    return tile_in, tile_out
