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
from diffusion.models import VAEModel

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


def _seeded_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for ``module``'s keys (He-scaled convs, small biases)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        scale = (2.0 / max(1, value[0].numel())) ** 0.5 if value.dim() > 1 else 0.01
        state[key] = (torch.randn(value.shape, generator=generator) * scale).contiguous()
    return state


def write_taesd_decoder(path: str | os.PathLike[str], seed: int = 0, latent_channels: int = 4) -> Path:
    """Write a seeded random TAESD decoder in the real key layout atomically (``.pth`` as a
    torch pickle of tensors, anything else as ``.safetensors``)."""
    from safetensors.torch import save_file

    state = _seeded_state(build_decoder(latent_channels), seed)
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
    """``make-model --kind taesd``: a seeded random decoder, or with ``--arch encoder`` an encoder
    (TAESD and TAESDXL share the layout; ``base``, ``rank`` and ``size`` do not change it)."""
    if arch == "encoder":
        return write_taesd_encoder(out, seed)
    return write_taesd_decoder(out, seed)


#: The TAESD pairs VAELoader offers: name -> (file stem prefix, latent scale, latent shift, latent channels).
TINY_VAES: dict[str, tuple[str, float, float, int]] = {
    "taesd": ("taesd", 0.18215, 0.0, 4),
    "taesdxl": ("taesdxl", 0.13025, 0.0, 4),
    "taesd3": ("taesd3", 1.5305, 0.0609, 16),
    "taef1": ("taef1", 0.3611, 0.1159, 16),
}


def build_encoder(latent_channels: int = 4) -> nn.Sequential:
    """An untrained TAESD encoder in the published layout: a conv, a block, then three stages of
    a stride-2 bias-free conv and three blocks, and a conv to the latent channels."""
    layers: list[nn.Module] = [_conv(3, WIDTH), ResidualBlock(WIDTH)]
    for _ in range(3):
        layers += [nn.Conv2d(WIDTH, WIDTH, 3, padding=1, stride=2, bias=False)]
        layers += [ResidualBlock(WIDTH) for _ in range(3)]
    layers += [_conv(WIDTH, latent_channels)]
    return nn.Sequential(*layers)


class _Posterior:
    """What ``AutoencoderKL.encode`` returns, reduced to the ``mean`` the VAE code reads."""

    def __init__(self, mean: torch.Tensor) -> None:
        self.mean = mean


class TinyAutoencoder(nn.Module):
    """A TAESD encoder/decoder pair with AutoencoderKL's ``encode``/``decode`` calling convention.

    Latents are the raw (unscaled) VAE latents a LATENT holds; pixels are in -1..1.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, scale: float, shift: float) -> None:
        super().__init__()
        self.encoder, self.decoder, self.scale, self.shift = encoder, decoder, scale, shift

    def decode(self, z: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        """Raw latents -> pixels in -1..1."""
        return (self.decoder((z - self.shift) * self.scale).mul(2.0).sub(1.0),)

    def encode(self, x: torch.Tensor, return_dict: bool = False) -> tuple[_Posterior]:
        """Pixels in -1..1 -> raw latents (as a posterior whose ``mean`` they are)."""
        return (_Posterior(self.encoder(x * 0.5 + 0.5) / self.scale + self.shift),)


class PixelSpaceAutoencoder(nn.Module):
    """ComfyUI's ``pixel_space`` VAE: the latent is the image itself, in -1..1."""

    def decode(self, z: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        """The latent unchanged."""
        return (z,)

    def encode(self, x: torch.Tensor, return_dict: bool = False) -> tuple[_Posterior]:
        """The pixels unchanged."""
        return (_Posterior(x),)


def load_tiny_autoencoder(name: str, encoder_path: str | os.PathLike[str], decoder_path: str | os.PathLike[str],
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TinyAutoencoder:
    """The TAESD pair ``name`` (a :data:`TINY_VAES` key) from its two files; bad files are CheckpointErrors."""
    _, scale, shift, _ = TINY_VAES[name]
    decoder = load_taesd_decoder(decoder_path, device, dtype)
    file_name = Path(encoder_path).name
    with TensorFile(encoder_path) as file:
        prefix = "encoder." if "encoder.0.weight" in file.shapes else ""
        if prefix + "0.weight" not in file.shapes:
            raise CheckpointError(f"{file_name}: not a TAESD encoder (no 0.weight)")
        channels = file.shapes[prefix + "14.weight"][0] if prefix + "14.weight" in file.shapes else 4
        state = {k[len(prefix):]: file.get(k, dtype) for k in file.shapes if k.startswith(prefix)}
    with torch.device("meta"):
        encoder = build_encoder(channels)
    try:
        encoder.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{file_name}: the TAESD encoder weights do not fit "
                              f"({str(exc).splitlines()[-1].strip()})") from None
    return TinyAutoencoder(encoder.to(device).eval().requires_grad_(False), decoder, scale, shift)


def write_taesd_encoder(path: str | os.PathLike[str], seed: int = 0, latent_channels: int = 4) -> Path:
    """Write a seeded random TAESD encoder in the real key layout (``.safetensors``) atomically."""
    from safetensors.torch import save_file

    state = _seeded_state(build_encoder(latent_channels), seed)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as part:
        save_file(state, str(part), metadata={"format": "pt"})
    return target


def tiny_vae_model(name: str, encoder_path: str | os.PathLike[str], decoder_path: str | os.PathLike[str],
                   device: torch.device | str = "cpu") -> VAEModel:
    """VAELoader's ``taesd``/``taesdxl``/...: the TAESD pair as a VAE (fp32: it is small)."""
    device = torch.device(device)
    model = load_tiny_autoencoder(name, encoder_path, decoder_path, device)
    return VAEModel(model, TINY_VAES[name][1], device, torch.float32)  # type: ignore[arg-type]


def pixel_space_vae(device: torch.device | str = "cpu") -> VAEModel:
    """VAELoader's ``pixel_space``: the identity "VAE" of pixel-space models."""
    device = torch.device(device)
    return VAEModel(PixelSpaceAutoencoder(), 1.0, device, torch.float32)  # type: ignore[arg-type]
