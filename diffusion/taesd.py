"""TAESD / TAESDXL decoders: tiny convolutional decoders from SD latents to pixels, for previews.

The layout is the published one (``taesd_decoder.pth`` / ``.safetensors``, bare keys
``1.weight`` ... ``19.bias``): a soft clamp of the latent (``3 tanh(x / 3)``), a 3x3 conv
to 64 channels, then three stages of three residual blocks each followed by a 2x
nearest upsample and a bias-free 3x3 conv, one more block, and a 3x3 conv to RGB. A
block is conv-ReLU-conv-ReLU-conv added to its input, then ReLU. The decoder takes the
sampler's model-space latent (already multiplied by the latent scale) and gives RGB in
0..1 at 8x the latent's size.

:func:`write_taesd_decoder` writes a seeded random one in that layout, for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.files import atomic_path

#: Decoder file stems in ``models/vae_approx/`` per latent family, as ComfyUI names them.
DECODER_STEMS = {"sd1": "taesd_decoder", "sdxl": "taesdxl_decoder"}
_FAMILY = {"sd1": "sd1", "sd2": "sd1", "sdxl": "sdxl", "sdxl_refiner": "sdxl"}
WIDTH = 64


def decoder_stem(arch: str) -> str:
    """The decoder file stem (no extension) for a model family (SD1's for SD2)."""
    return DECODER_STEMS[_FAMILY.get(arch, "sd1")]


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """``3 tanh(x / 3)``: keeps outlier latents from blowing up the decoder."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Squash ``x`` smoothly into (-3, 3)."""
        return torch.tanh(x / 3.0) * 3.0


class ResidualBlock(nn.Module):
    """Three 3x3 convs (ReLU between) added to the input, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU(),
                                  _conv(channels, channels))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: ``relu(convs(x) + x)``."""
        return self.fuse(self.conv(x) + self.skip(x))


def build_decoder(latent_channels: int = 4) -> nn.Sequential:
    """An untrained decoder in the published layout (module indices are the file's key prefixes)."""
    layers: list[nn.Module] = [SoftClamp(), _conv(latent_channels, WIDTH), nn.ReLU()]
    for _ in range(3):
        layers += [ResidualBlock(WIDTH) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]
    layers += [ResidualBlock(WIDTH), _conv(WIDTH, 3)]
    return nn.Sequential(*layers)


def load_taesd_decoder(path: str | os.PathLike[str], device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Load a TAESD decoder file (``.safetensors`` or a weights-only ``.pth``); a bad file is a CheckpointError."""
    name = Path(path).name
    with TensorFile(path) as file:
        prefix = "decoder." if "decoder.1.weight" in file.shapes else ""
        if prefix + "1.weight" not in file.shapes:
            raise CheckpointError(f"{name}: not a TAESD decoder (no 1.weight)")
        latent_channels = file.shapes[prefix + "1.weight"][1]
        state = {k[len(prefix):]: file.get(k, dtype) for k in file.shapes if k.startswith(prefix)}
    with torch.device("meta"):
        decoder = build_decoder(latent_channels)
    try:
        decoder.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{name}: the TAESD decoder weights do not fit ({str(exc).splitlines()[-1].strip()})"
                              ) from None
    return decoder.to(device).eval().requires_grad_(False)


def write_taesd_decoder(path: str | os.PathLike[str], seed: int = 0, latent_channels: int = 4) -> Path:
    """Write a seeded random TAESD decoder in the real key layout atomically (``.pth`` as a
    torch pickle of tensors, anything else as ``.safetensors``)."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    decoder = build_decoder(latent_channels)
    state = {}
    for key, value in decoder.state_dict().items():
        scale = (2.0 / max(1, value[0].numel())) ** 0.5 if value.dim() > 1 else 0.01
        state[key] = (torch.randn(value.shape, generator=generator) * scale).contiguous()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as part:
        if target.suffix.lower() in (".pth", ".pt"):
            torch.save(state, part)
        else:
            save_file(state, str(part), metadata={"format": "pt"})
    return target


def write_taesd(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0, arch: str | None = None,
                size: str = "tiny") -> Path:
    """``make-model --kind taesd``: a seeded random decoder (TAESD and TAESDXL share the layout;
    ``base``, ``rank``, ``arch`` and ``size`` do not change it)."""
    return write_taesd_decoder(out, seed)
