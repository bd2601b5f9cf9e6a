"""ESRGAN's RRDBNet (Residual-in-Residual Dense Blocks), in the original ("old") key layout.

The module's state-dict keys are those of the original ESRGAN ``.pth`` files, where the
network is one ``nn.Sequential`` called ``model``::

    model.0                          conv_first (in -> nf)
    model.1.sub.{i}.RDB{1..3}.conv{1..5}.0   the dense blocks of RRDB i
    model.1.sub.{nb}                 the trunk conv, added back to model.0's output
    model.{3 + 3k}                   one conv per 2x nearest upsampling (k = 0..n-1)
    model.{2 + 3n}, model.{4 + 3n}   HR conv and the last conv (-> out channels)

BasicSR / Real-ESRGAN files (``conv_first``, ``body.{i}.rdb1.conv1``, ``conv_up1``...,
or the older ``RRDB_trunk``/``trunk_conv``/``upconv1``/``HRconv`` names) hold the same
network; :func:`from_new_layout` renames their keys to this layout. Real-ESRGAN's x2 and
x1 models first fold the image with ``pixel_unshuffle`` (factor 2 or 4, seen as 12 or 48
input channels) and upsample 4x.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: The slope of every LeakyReLU in ESRGAN.
NEGATIVE_SLOPE = 0.2
#: How much of a dense block's (and an RRDB's) output is added to its input.
RESIDUAL_SCALE = 0.2


@dataclass(frozen=True)
class RRDBConfig:
    """The shape of an RRDBNet: channels, features, growth, blocks, 2x upsamplings, pixel-unshuffle factor."""

    in_channels: int = 3
    out_channels: int = 3
    features: int = 64
    growth: int = 32
    blocks: int = 23
    upsamplings: int = 2
    unshuffle: int = 1

    @property
    def scale(self) -> float:
        """Output pixels per input pixel, per side."""
        return 2 ** self.upsamplings / self.unshuffle


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        for i in range(4):
            setattr(self, f"conv{i + 1}", nn.Sequential(_conv(features + i * growth, growth), act))
        self.conv5 = nn.Sequential(_conv(features + 4 * growth, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + 0.2 * conv5([x, x1, x2, x3, x4])``."""
        outs = [x]
        for i in range(4):
            outs.append(getattr(self, f"conv{i + 1}")(torch.cat(outs, 1)))
        return x + self.conv5(torch.cat(outs, 1)) * RESIDUAL_SCALE


class RRDB(nn.Module):
    """Three dense blocks with a scaled residual around them."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.RDB1 = DenseBlock(features, growth)
        self.RDB2 = DenseBlock(features, growth)
        self.RDB3 = DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + 0.2 * RDB3(RDB2(RDB1(x)))``."""
        return x + self.RDB3(self.RDB2(self.RDB1(x))) * RESIDUAL_SCALE


class _Shortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class RRDBNet(nn.Module):
    """ESRGAN's generator; ``forward`` maps ``[B, C, H, W]`` in 0..1 to ``[B, C, H * scale, W * scale]``."""

    def __init__(self, config: RRDBConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.features
        trunk = [RRDB(nf, config.growth) for _ in range(config.blocks)]
        layers: list[nn.Module] = [_conv(config.in_channels * config.unshuffle ** 2, nf),
                                   _Shortcut(nn.Sequential(*trunk, _conv(nf, nf)))]
        for _ in range(config.upsamplings):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(nf, nf),
                       nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
        layers += [_conv(nf, nf), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True), _conv(nf, config.out_channels)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The upscaled image (not clamped)."""
        if self.config.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.config.unshuffle)
        return self.model(x)


# -- key layouts ------------------------------------------------------------------------------------

_NEW_BLOCK = re.compile(r"^(?:body|RRDB_trunk)\.(\d+)\.(?:rdb|RDB)(\d)\.conv(\d)\.(weight|bias)$")
_NEW_UP = re.compile(r"^(?:conv_up|upconv)(\d+)\.(weight|bias)$")


def is_new_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for BasicSR / Real-ESRGAN key names."""
    return "conv_first.weight" in state


def is_old_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for original ESRGAN key names."""
    return "model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state


def from_new_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR / Real-ESRGAN keys renamed to the original layout (tensors shared)."""
    blocks = 1 + max(int(m.group(1)) for k in state if (m := _NEW_BLOCK.match(k)))
    ups = sorted({int(m.group(1)) for k in state if (m := _NEW_UP.match(k))})
    hr = 2 + 3 * len(ups)
    fixed = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}", "trunk_conv": f"model.1.sub.{blocks}",
             "conv_hr": f"model.{hr}", "HRconv": f"model.{hr}", "conv_last": f"model.{hr + 2}"}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if m := _NEW_BLOCK.match(key):
            out[f"model.1.sub.{m.group(1)}.RDB{m.group(2)}.conv{m.group(3)}.0.{m.group(4)}"] = tensor
        elif m := _NEW_UP.match(key):
            out[f"model.{3 + 3 * ups.index(int(m.group(1)))}.{m.group(2)}"] = tensor
        else:
            stem, _, leaf = key.rpartition(".")
            if stem not in fixed:
                raise ValueError(f"unexpected key {key!r} in an RRDBNet state dict")
            out[f"{fixed[stem]}.{leaf}"] = tensor
    return out


def to_new_layout(state: Mapping[str, torch.Tensor], config: RRDBConfig) -> dict[str, torch.Tensor]:
    """Original-layout keys renamed to BasicSR's (what Real-ESRGAN releases use)."""
    hr = 2 + 3 * config.upsamplings
    fixed = {"model.0": "conv_first", f"model.1.sub.{config.blocks}": "conv_body", f"model.{hr}": "conv_hr",
             f"model.{hr + 2}": "conv_last"}
    fixed.update({f"model.{3 + 3 * k}": f"conv_up{k + 1}" for k in range(config.upsamplings)})
    block = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if m := block.match(key):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = tensor
        else:
            stem, _, leaf = key.rpartition(".")
            out[f"{fixed[stem]}.{leaf}"] = tensor
    return out


def config_from_state(state: Mapping[str, torch.Tensor]) -> RRDBConfig:
    """The network's shape read from an original-layout state dict."""
    convs = sorted(int(m.group(1)) for k in state if (m := re.match(r"^model\.(\d+)\.weight$", k)))
    last = convs[-1]
    upsamplings = len([i for i in convs if 1 < i < last - 2])
    blocks = len({m.group(1) for k in state if (m := re.match(r"^model\.1\.sub\.(\d+)\.RDB1\.", k))})
    first = state["model.0.weight"]
    out_channels = int(state[f"model.{last}.weight"].shape[0])
    folded = int(first.shape[1])
    unshuffle = 1
    if folded != out_channels and folded % out_channels == 0:
        unshuffle = math.isqrt(folded // out_channels)
    return RRDBConfig(in_channels=folded // unshuffle ** 2, out_channels=out_channels, features=int(first.shape[0]),
                      growth=int(state["model.1.sub.0.RDB1.conv1.0.weight"].shape[0]), blocks=blocks,
                      upsamplings=upsamplings, unshuffle=unshuffle)
