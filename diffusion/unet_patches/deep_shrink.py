"""Kohya's deep shrink (PatchModelAddDownscale): run the deep blocks at a lower resolution early in sampling.

An input block's output is shrunk by ``downscale_factor`` while sigma is within the range,
and every output block brings ``h`` back to its skip's size before they are joined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffusion.resize import upscale


def downscale_patch(block_number: int, downscale_factor: float, sigma_start: float, sigma_end: float,
                    method: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """An input block patch shrinking input block ``block_number``'s output while sigma is in [end, start]."""
    def patch(h: torch.Tensor, options: Any) -> torch.Tensor:
        if options["block"][1] != block_number:
            return h
        sigma = float(options["sigmas"][0])
        if sigma_end <= sigma <= sigma_start:
            width = round(h.shape[-1] * (1.0 / downscale_factor))
            height = round(h.shape[-2] * (1.0 / downscale_factor))
            h = upscale(h, width, height, method)
        return h

    return patch


def restore_patch(method: str) -> Callable[[torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]]:
    """An output block patch resizing ``h`` to its skip's size when they differ."""
    def patch(h: torch.Tensor, hsp: torch.Tensor, _options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if h.shape[-2:] != hsp.shape[-2:]:
            h = upscale(h, hsp.shape[-1], hsp.shape[-2], method)
        return h, hsp

    return patch
