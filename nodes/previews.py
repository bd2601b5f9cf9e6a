"""The sampler nodes' step previews: which method a prompt asks for, and the TAESD decoder to use.

``extra_data["preview_method"]``: absent or ``default`` or ``latent2rgb`` -> latent2rgb
with the palette fitted to the checkpoint's VAE (``diffusion.preview``); ``auto`` or
``taesd`` -> the family's TAESD decoder from ``models/vae_approx/``
(``taesd_decoder.*`` for SD1/SD2, ``taesdxl_decoder.*`` for SDXL) when one is installed,
else latent2rgb, as ComfyUI does; ``none`` -> no previews.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes.api import Context

#: Extensions tried for a TAESD decoder file, in order.
DECODER_SUFFIXES = (".safetensors", ".pth", ".pt")


def taesd_decoder_path(ctx: Context, arch: str) -> Path | None:
    """The installed TAESD decoder file for a model family, or None."""
    from diffusion.taesd import decoder_stem

    stem = decoder_stem(arch)
    for suffix in DECODER_SUFFIXES:
        path = ctx.folders.full_path("vae_approx", stem + suffix)
        if path is not None:
            return path
    return None


def previewer(ctx: Context, model: Any) -> Callable[[Any], Any] | None:
    """``denoised -> preview tuple`` for the prompt's preview method, or None when previews are off."""
    from diffusion.preview import preview_tuple, wants_preview, wants_taesd

    method = ctx.extra_data.get("preview_method")
    if not wants_preview(method):
        return None
    decoder = None
    if wants_taesd(method):
        path = taesd_decoder_path(ctx, model.arch)
        if path is not None:
            from diffusion.taesd import load_taesd_decoder

            device = model.device
            decoder = ctx.services.model_cache().get(path, ("taesd", str(device)),
                                                     lambda: load_taesd_decoder(path, device))
    unet = model.model

    def preview(denoised: Any) -> Any:
        return preview_tuple(denoised, model.arch, unet, decoder)

    return preview
