"""ComfyUI's ``latent_preview``: step previews of latents, as noodlebox's sampler makes them."""

from __future__ import annotations

from typing import Any

from . import missing, runtime
from .comfy.cli_args import LatentPreviewMethod

__all__ = ["MAX_PREVIEW_RESOLUTION", "Latent2RGBPreviewer", "LatentPreviewMethod", "LatentPreviewer",
           "get_previewer", "prepare_callback"]

__getattr__ = missing("latent_preview")

MAX_PREVIEW_RESOLUTION = 512


class LatentPreviewer:
    """Turns a denoised latent into a preview tuple ``("JPEG", image, max_size)``."""

    def __init__(self, arch: str = "sd1") -> None:
        self.arch = arch

    def decode_latent_to_preview_image(self, preview_format: str, x0: Any) -> Any:
        """The preview of ``x0`` (``[B, C, h, w]``)."""
        from diffusion.preview import preview_tuple

        return preview_tuple(x0, self.arch)


#: The latent2rgb previewer under ComfyUI's class name.
Latent2RGBPreviewer = LatentPreviewer


def get_previewer(device: Any, latent_format: Any) -> LatentPreviewer:
    """A latent2rgb previewer (noodlebox has no TAESD)."""
    return LatentPreviewer(getattr(latent_format, "arch", "sd1"))


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None) -> Any:
    """A sampler callback ``(step, x0, x, total_steps)`` that reports progress to the running node."""
    ctx = runtime.exec_ctx()

    def callback(step: int, x0: Any, x: Any, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        ctx.progress(step + 1, total_steps, None)

    return callback
