"""The sampler nodes' step previews: which method a prompt asks for, and the TAESD decoder to use.

``extra_data["preview_method"]``: absent or ``default`` or ``latent2rgb`` -> latent2rgb
with the palette fitted to the checkpoint's VAE (``diffusion.preview``); ``auto`` or
``taesd`` -> the family's TAESD decoder from ``models/vae_approx/``
(``taesd_decoder.*`` for SD1/SD2, ``taesdxl_decoder.*`` for SDXL) when one is installed,
else latent2rgb, as ComfyUI does; ``none`` -> no previews.

The same folder's encoder/decoder pairs are what VAELoader offers as ``taesd``,
``taesdxl``, ``taesd3`` and ``taef1`` (:func:`vae_loader_names`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes.api import Context

#: Extensions tried for a TAESD decoder file, in order.
DECODER_SUFFIXES = (".safetensors", ".pth", ".pt")
#: VAELoader's TAESD names, also the stems of their ``<name>_encoder.*``/``<name>_decoder.*`` files
#: (``diffusion.taesd.TINY_VAES`` has their latent scales; listed here so that building
#: /object_info never imports torch).
TAESD_NAMES = ("taesd", "taesdxl", "taesd3", "taef1")


def taesd_decoder_path(ctx: Context, arch: str) -> Path | None:
    """The installed TAESD decoder file for a model family, or None."""
    from diffusion.taesd import decoder_stem

    stem = decoder_stem(arch)
    for suffix in DECODER_SUFFIXES:
        path = ctx.folders.full_path("vae_approx", stem + suffix)
        if path is not None:
            return path
    return None


def _approx_file(folders: Any, prefix: str) -> str | None:
    """The first ``vae_approx`` file named ``<prefix>.<extension>``, or None."""
    return next((name for name in folders.filename_list("vae_approx") if name.startswith(prefix + ".")), None)


def vae_loader_names(folders: Any) -> list[str]:
    """VAELoader's choices: the ``vae`` files, each TAESD pair installed in ``vae_approx``, then ``pixel_space``."""
    tiny = [name for name in TAESD_NAMES
            if _approx_file(folders, name + "_encoder") and _approx_file(folders, name + "_decoder")]
    return [*folders.filename_list("vae"), *tiny, "pixel_space"]


def tiny_vae_paths(ctx: Context, name: str) -> tuple[Path, Path] | None:
    """(encoder, decoder) files of the TAESD pair ``name``, or None when it is not one or not installed."""
    if name not in TAESD_NAMES:
        return None
    files = [_approx_file(ctx.folders, name + part) for part in ("_encoder", "_decoder")]
    paths = [ctx.folders.full_path("vae_approx", f) for f in files if f is not None]
    return (paths[0], paths[1]) if len(paths) == 2 and None not in paths else None  # type: ignore[return-value]


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
