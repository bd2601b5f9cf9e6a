"""Sampler previews: the step's denoised latent as a small RGB image.

Two methods, as in ComfyUI:

- **latent2rgb**: a cheap per-pixel map from the latent to RGB, at latent resolution. It is
  a *palette* fitted to the checkpoint's own VAE the first time a preview is asked for
  (:func:`fit_palette`: the latents of 216 solid colours, looked up softly by nearest
  latent), so a VAE unlike SD's, such as the demo model's, still previews in the right
  colours. A UNet loaded without a VAE uses ComfyUI's fixed linear factors for its family.
- **taesd**: a TAESD decoder (``diffusion.taesd``) turns the latent into pixels at 8x
  its size; the caller finds and loads the decoder, and passes it in.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

#: ComfyUI's ``latent_rgb_factors`` ([channel][r, g, b]) and bias per latent family.
LATENT_RGB: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float] | None]] = {
    "sd1": (((0.3512, 0.2297, 0.3227), (0.325, 0.4974, 0.235), (-0.2829, 0.1762, 0.2721),
             (-0.212, -0.2616, -0.7177)), None),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}
_FAMILY = {"sd1": "sd1", "sd2": "sd1", "sdxl": "sdxl", "sdxl_refiner": "sdxl"}

#: ``extra_data["preview_method"]`` values that give previews; ``none`` turns them off.
#: Absent or ``default`` means the server default: latent2rgb. ``auto`` and ``taesd`` use a
#: TAESD decoder when one is installed, else latent2rgb (as ComfyUI does).
PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "default")

#: Grey levels per channel of the solid colours :func:`fit_palette` encodes (6**3 = 216), and their size.
FIT_LEVELS = 6
FIT_SIZE = 8
#: Softness of the nearest-colour lookup, as a fraction of the mean distance between the colours' latents.
FIT_SOFTNESS = 0.05


@dataclass(frozen=True)
class Palette:
    """latent -> RGB (in -1..1) for previews.

    Without ``keys``, linear: ``rgb = latent . weight + bias`` (ComfyUI's factors). With
    them, a soft nearest-colour lookup: each latent pixel takes the colours of the
    ``keys`` (latents of solid colours) weighted by ``softmax(-distance / softness)``; a
    VAE whose colours are far from linear in its latents (the demo model's) needs it.
    """

    weight: torch.Tensor  # [C, 3]
    bias: torch.Tensor  # [3]
    keys: torch.Tensor | None = None  # [K, C]
    colours: torch.Tensor | None = None  # [K, 3], -1..1
    softness: float = 1.0

    @classmethod
    def for_family(cls, arch: str) -> Palette:
        """ComfyUI's fixed factors for a latent family (SD1's for unknown ones)."""
        factors, bias = LATENT_RGB[_FAMILY.get(arch, "sd1")]
        return cls(torch.tensor(factors, dtype=torch.float32),
                   torch.tensor(bias if bias is not None else (0.0, 0.0, 0.0), dtype=torch.float32))

    def apply(self, latent: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` model-space latents -> ``[..., 3]`` RGB in -1..1."""
        if self.keys is None or self.colours is None:
            channels = min(latent.shape[-1], self.weight.shape[0])
            return latent[..., :channels] @ self.weight[:channels] + self.bias
        flat = latent.reshape(-1, latent.shape[-1])
        weights = torch.softmax(-torch.cdist(flat, self.keys) / self.softness, dim=1)
        return (weights @ self.colours).reshape(*latent.shape[:-1], 3)


def wants_preview(method: Any) -> bool:
    """True if the prompt's ``preview_method`` (None when absent) asks for sampler previews."""
    return method is None or str(method) in PREVIEW_METHODS


def wants_taesd(method: Any) -> bool:
    """True if the prompt's ``preview_method`` asks for a TAESD decoder when one is installed."""
    return str(method) in ("auto", "taesd")


def fit_palette(encode: Callable[[torch.Tensor], torch.Tensor], latent_scale: float) -> Palette:
    """A palette for a VAE, from the latents of solid colours.

    ``encode`` maps pixels in 0..1 ``[B, 3, H, W]`` to latents ``[B, C, H/8, W/8]`` (the
    posterior mean). Each of :data:`FIT_LEVELS` cubed solid colours is encoded; the mean
    of its latent, times ``latent_scale`` (the sampler's model space), is its key. The
    linear least-squares factors from keys to colours are kept too.
    """
    levels = torch.linspace(0.0, 1.0, FIT_LEVELS)
    colours = torch.cartesian_prod(levels, levels, levels)  # [K, 3]
    pixels = colours.view(-1, 3, 1, 1).expand(-1, 3, FIT_SIZE, FIT_SIZE).contiguous()
    keys = (encode(pixels).float() * latent_scale).mean(dim=(2, 3))  # [K, C]
    signed = colours * 2.0 - 1.0
    design = torch.cat([keys.double(), torch.ones(keys.shape[0], 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, signed.double()).solution.float()
    softness = max(FIT_SOFTNESS * float(torch.cdist(keys, keys).mean()), 1e-6)
    return Palette(solution[:-1].contiguous(), solution[-1].contiguous(), keys, signed, softness)


# Palettes per UNet module (clones share it), fitted lazily from the VAE loaded with it.
_palettes: weakref.WeakKeyDictionary[torch.nn.Module, Palette] = weakref.WeakKeyDictionary()
_sources: weakref.WeakKeyDictionary[torch.nn.Module, Callable[[], Palette | None]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def remember_vae(unet: torch.nn.Module, vae: Any, latent_scale: float) -> None:
    """Tie a UNet module to the ``VAEModel`` of its checkpoint: its first preview fits a palette from it.

    The VAE is held weakly: once it is freed, the family's fixed factors are used. The fit
    encodes 216 8x8 images once (0.5 s for the demo VAE on one busy core).
    """
    vae_ref = weakref.ref(vae)

    def fit() -> Palette | None:
        from diffusion.vae import encode

        alive = vae_ref()
        if alive is None:
            return None
        return fit_palette(lambda pixels: encode(alive, pixels.movedim(1, -1)), latent_scale)

    with _lock:
        _sources[unet] = fit
        _palettes.pop(unet, None)


def palette_for(unet: torch.nn.Module | None, arch: str) -> Palette:
    """The palette fitted to ``unet``'s VAE, else the family's fixed factors."""
    if unet is not None:
        with _lock:
            palette = _palettes.get(unet)
            source = _sources.get(unet) if palette is None else None
        if palette is None and source is not None:
            palette = source()
            if palette is not None:
                with _lock:
                    _palettes[unet] = palette
        if palette is not None:
            return palette
    return Palette.for_family(arch)


def latent_to_rgb(x0: torch.Tensor, palette: Palette | str) -> Image.Image:
    """The first latent of a batch ([B, C, h, w], model space) as an ``h x w`` RGB image.

    ``palette`` is a :class:`Palette` or a family name (its fixed factors).
    """
    if isinstance(palette, str):
        palette = Palette.for_family(palette)
    rgb = palette.apply(x0[0].float().cpu().movedim(0, -1))
    # Truncating to uint8, as ComfyUI does (no rounding).
    pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def taesd_to_rgb(x0: torch.Tensor, decoder: torch.nn.Module) -> Image.Image:
    """The first latent of a batch through a TAESD decoder, as an RGB image 8x its size."""
    parameter = next(decoder.parameters())
    with torch.no_grad():
        pixels = decoder(x0[:1].to(parameter.device, parameter.dtype))[0].float().cpu()
    return Image.fromarray(pixels.clamp(0, 1).mul(255).to(torch.uint8).movedim(0, -1).numpy())


def preview_tuple(x0: torch.Tensor, arch: str, unet: torch.nn.Module | None = None,
                  taesd: torch.nn.Module | None = None) -> tuple[str, Image.Image, None]:
    """The executor's preview payload: ``("JPEG", image, None)`` (the server applies its preview size).

    With ``taesd`` the decoder draws it; else latent2rgb with ``unet``'s fitted palette
    (:func:`palette_for`).
    """
    if taesd is not None:
        return ("JPEG", taesd_to_rgb(x0, taesd), None)
    return ("JPEG", latent_to_rgb(x0, palette_for(unet, arch)), None)
