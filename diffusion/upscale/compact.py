"""Real-ESRGAN's compact model (SRVGGNetCompact): a plain conv stack, a pixel shuffle, plus the nearest upscale.

Keys (``body`` is one ``nn.ModuleList``)::

    body.0           conv in -> nf           body.1       PReLU (nf slopes)
    body.{2k}        conv nf -> nf           body.{2k+1}  PReLU      (k = 1..num_conv)
    body.{2n+2}      conv nf -> out * scale^2, then PixelShuffle(scale)

The output is added to the input upscaled by nearest neighbour, so the network learns
the residual (``realesr-general-x4v3`` and the animevideo models).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CompactConfig:
    """In/out channels, features, hidden convs and the upscale factor."""

    in_channels: int = 3
    out_channels: int = 3
    features: int = 64
    convs: int = 32
    scale: int = 4


class SRVGGNetCompact(nn.Module):
    """``forward`` maps ``[B, C, H, W]`` in 0..1 to ``[B, C, H * scale, W * scale]``."""

    def __init__(self, config: CompactConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.features
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, nf, 3, 1, 1), nn.PReLU(num_parameters=nf)]
        for _ in range(config.convs):
            layers += [nn.Conv2d(nf, nf, 3, 1, 1), nn.PReLU(num_parameters=nf)]
        layers.append(nn.Conv2d(nf, config.out_channels * config.scale ** 2, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(config.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The upscaled image (not clamped)."""
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.config.scale, mode="nearest")


def is_compact(state: Mapping[str, torch.Tensor]) -> bool:
    """True for SRVGGNetCompact keys (a conv then a 1-D PReLU weight at the start of ``body``)."""
    return ("body.0.weight" in state and "body.1.weight" in state and state["body.0.weight"].ndim == 4
            and state["body.1.weight"].ndim == 1)


def config_from_state(state: Mapping[str, torch.Tensor]) -> CompactConfig:
    """The network's shape read from its state dict."""
    last = max(int(m.group(1)) for k in state if (m := re.match(r"^body\.(\d+)\.weight$", k)))
    first = state["body.0.weight"]
    in_channels = int(first.shape[1])
    scale = math.isqrt(int(state[f"body.{last}.weight"].shape[0]) // in_channels)
    return CompactConfig(in_channels=in_channels, out_channels=in_channels, features=int(first.shape[0]),
                         convs=(last - 2) // 2, scale=scale)
