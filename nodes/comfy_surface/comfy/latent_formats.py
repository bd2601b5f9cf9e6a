"""ComfyUI's ``comfy.latent_formats``: each model family's latent channels and scaling."""

from __future__ import annotations

from typing import Any

from .. import missing

__getattr__ = missing("comfy.latent_formats")


class LatentFormat:
    """Scale and shift between VAE latents and the model's latents: ``(x - shift) * scale`` in."""

    scale_factor = 1.0
    shift_factor = 0.0
    latent_channels = 4
    arch = "sd1"

    def process_in(self, latent: Any) -> Any:
        """VAE latent -> model latent."""
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: Any) -> Any:
        """Model latent -> VAE latent."""
        return latent / self.scale_factor + self.shift_factor


class SD15(LatentFormat):
    """SD 1.x / 2.x."""

    scale_factor = 0.18215


class SDXL(LatentFormat):
    """SDXL."""

    scale_factor = 0.13025
    arch = "sdxl"


class SD3(LatentFormat):
    """SD 3.x: 16 channels."""

    scale_factor = 1.5305
    shift_factor = 0.0609
    latent_channels = 16
    arch = "sd3"


class Flux(LatentFormat):
    """Flux: 16 channels."""

    scale_factor = 0.3611
    shift_factor = 0.1159
    latent_channels = 16
    arch = "flux"
