"""FreeU and FreeU v2: scale the backbone features and damp the skips' low frequencies in the output blocks.

ComfyUI's rule: an output block whose ``h`` has ``4 x`` or ``2 x`` the model's base channels
gets ``(b1, s1)`` or ``(b2, s2)``; the first half of ``h``'s channels is scaled by ``b``
(v2: by ``1 + (b - 1) * m``, ``m`` the per-pixel channel mean normalised to 0..1 per
image), and the skip ``hsp`` has its centre frequencies (a 2 x 2 square around the centre of
the shifted spectrum) multiplied by ``s``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """``x`` with the ``2 threshold`` square of lowest frequencies (after fftshift) scaled by ``scale``."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    _, _, height, width = freq.shape
    mask = torch.ones_like(freq.real)
    row, col = height // 2, width // 2
    mask[..., row - threshold:row + threshold, col - threshold:col + threshold] = scale
    filtered = torch.fft.ifftn(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(x.dtype)


def freeu_patch(model_channels: int, b1: float, b2: float, s1: float, s2: float,
                version: int = 1) -> Callable[[torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]]:
    """An ``output_block_patch`` doing FreeU (``version`` 1 or 2)."""
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}

    def patch(h: torch.Tensor, hsp: torch.Tensor, _options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scale = scales.get(h.shape[1])
        if scale is None:
            return h, hsp
        b, s = scale
        half = h.shape[1] // 2
        h = h.clone()
        if version == 1:
            h[:, :half] = h[:, :half] * b
        else:
            mean = h.mean(1, keepdim=True)
            flat = mean.view(mean.shape[0], -1)
            low = flat.min(dim=-1, keepdim=True).values[:, :, None, None]
            high = flat.max(dim=-1, keepdim=True).values[:, :, None, None]
            mean = (mean - low) / (high - low)
            h[:, :half] = h[:, :half] * ((b - 1) * mean + 1)
        return h, fourier_filter(hsp, threshold=1, scale=s)

    return patch
