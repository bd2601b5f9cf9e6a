"""Token merging (ToMe for SD) on the top level's self-attention.

Before the projections, the tokens are split into destinations (one at random per 2x2 cell,
from torch's global generator as ComfyUI does) and sources; the ``ratio`` share of sources most
similar (cosine) to a destination are averaged into it, so the queries are fewer. After the
output projection each merged source takes its destination's output again. Only the queries
are merged (keys and values keep every token), as in ComfyUI's patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]
#: The cell in which one token is kept as a destination.
STRIDE = (2, 2)


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


def _dst_first_order(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Token indices, destinations first then sources, and the destination count, for an ``h x w`` grid."""
    sy, sx = STRIDE
    rows, cols = h // sy, w // sx
    pick = torch.randint(sy * sx, size=(rows, cols, 1), device=device)
    marks = torch.zeros(rows, cols, sy * sx, device=device, dtype=torch.int64)
    marks.scatter_(dim=2, index=pick, src=-torch.ones_like(pick))
    marks = marks.view(rows, cols, sy, sx).transpose(1, 2).reshape(rows * sy, cols * sx)
    if rows * sy < h or cols * sx < w:  # a ragged edge stays with the sources
        full = torch.zeros(h, w, device=device, dtype=torch.int64)
        full[:rows * sy, :cols * sx] = marks
        marks = full
    return marks.reshape(1, -1, 1).argsort(dim=1), rows * cols


def bipartite_merge(metric: torch.Tensor, w: int, h: int, r: int) -> tuple[Fn, Fn]:
    """``(merge, unmerge)`` removing ``r`` of ``metric``'s [B, h * w, C] tokens by their cosine similarity."""
    batch, tokens, _ = metric.shape
    if r <= 0 or w == 1 or h == 1:
        return _unchanged, _unchanged
    with torch.no_grad():
        order, n_dst = _dst_first_order(h, w, metric.device)
        src_idx_all, dst_idx_all = order[:, n_dst:, :], order[:, :n_dst, :]

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            c = x.shape[-1]
            return (torch.gather(x, 1, src_idx_all.expand(x.shape[0], tokens - n_dst, c)),
                    torch.gather(x, 1, dst_idx_all.expand(x.shape[0], n_dst, c)))

        a, b = split(metric / metric.norm(dim=-1, keepdim=True))
        r = min(a.shape[1], r)
        best, best_dst = (a @ b.transpose(-1, -2)).max(dim=-1)
        ranked = best.argsort(dim=-1, descending=True)[..., None]
        kept, merged = ranked[..., r:, :], ranked[..., :r, :]
        target = torch.gather(best_dst[..., None], dim=-2, index=merged)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = split(x)
        n, t, c = src.shape
        unmerged = torch.gather(src, -2, kept.expand(n, t - r, c))
        moving = torch.gather(src, -2, merged.expand(n, r, c))
        return torch.cat([unmerged, dst.scatter_reduce(-2, target.expand(n, r, c), moving, reduce="mean")], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        n_kept = kept.shape[1]
        unmerged, dst = x[..., :n_kept, :], x[..., n_kept:, :]
        c = x.shape[-1]
        out = torch.zeros(batch, tokens, c, device=x.device, dtype=x.dtype)
        src_of = src_idx_all.expand(batch, src_idx_all.shape[1], 1)
        out.scatter_(-2, dst_idx_all.expand(batch, n_dst, c), dst)
        out.scatter_(-2, torch.gather(src_of, 1, kept).expand(batch, n_kept, c), unmerged)
        out.scatter_(-2, torch.gather(src_of, 1, merged).expand(batch, r, c),
                     torch.gather(dst, -2, target.expand(batch, r, c)))
        return out

    return merge, unmerge


def merge_functions(x: torch.Tensor, ratio: float, original_shape: list[int]) -> tuple[Fn, Fn]:
    """``(merge, unmerge)`` for a self-attention input ``x`` at the top level; no-ops at the deeper ones."""
    _, _, height, width = original_shape
    downsample = math.ceil(math.sqrt(height * width // x.shape[1]))
    if downsample > 1:
        return _unchanged, _unchanged
    return bipartite_merge(x, math.ceil(width / downsample), math.ceil(height / downsample),
                           int(x.shape[1] * ratio))


def tome_patches(ratio: float) -> tuple[Callable[..., Any], Callable[..., torch.Tensor]]:
    """``(attn1_patch, attn1_output_patch)`` merging ``ratio`` of the top level's query tokens."""
    pending: list[Fn] = [_unchanged]

    def merge_in(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 extra: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        merge, pending[0] = merge_functions(q, ratio, extra["original_shape"])
        return merge(q), k, v

    def unmerge_out(out: torch.Tensor, extra: Mapping[str, Any]) -> torch.Tensor:
        return pending[0](out)

    return merge_in, unmerge_out
