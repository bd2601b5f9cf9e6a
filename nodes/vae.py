"""VAE nodes: LATENT to IMAGE and back, whole or in tiles (ComfyUI's names, inputs and defaults)."""

from __future__ import annotations

from typing import Annotated, Any

from .api import Image, Latent, Output, Range, Tooltip, Vae, node

#: Pixels per latent pixel (the tile inputs are in pixels).
_DOWNSCALE = 8


def _ops() -> Any:
    """``diffusion.vae``, imported on first use: it pulls in diffusers, which the registry build does not need."""
    from diffusion import vae

    return vae


def _vae(vae: Any) -> Any:
    """The VAE input, or ComfyUI's error for a checkpoint without one."""
    if vae is None:
        raise RuntimeError("ERROR: VAE is invalid: None\n\nIf the VAE is from a checkpoint loader node your "
                           "checkpoint does not contain a valid VAE.")
    return vae


@node(category="latent", display_name="VAE Decode")
def VAEDecode(
    samples: Annotated[Latent, Tooltip("The latent to be decoded.")],
    vae: Annotated[Vae, Tooltip("The VAE model used for decoding the latent.")],
) -> Annotated[Image, Output(tooltip="The decoded image.")]:
    """Decodes latent images back into pixel space images."""
    return _ops().decode(_vae(vae), samples["samples"])


@node(category="latent", display_name="VAE Encode", description="")
def VAEEncode(pixels: Image, vae: Vae) -> Latent:
    """Encodes images into latents (posterior mean); sizes are cropped, centred, to multiples of 8."""
    return {"samples": _ops().encode(_vae(vae), pixels)}


@node(category="_for_testing", display_name="VAE Decode (Tiled)", description="")
def VAEDecodeTiled(
    samples: Latent,
    vae: Vae,
    tile_size: Annotated[int, Range(64, 4096, step=32)] = 512,
    overlap: Annotated[int, Range(0, 4096, step=32)] = 64,
    temporal_size: Annotated[int, Range(8, 4096, step=4),
                             Tooltip("Only used for video VAEs: Amount of frames to decode at a time.")] = 64,
    temporal_overlap: Annotated[int, Range(4, 4096, step=4),
                                Tooltip("Only used for video VAEs: Amount of frames to overlap.")] = 8,
) -> Image:
    """Decodes latents in overlapping tiles (less memory for big images); the temporal inputs are for video VAEs."""
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    return _ops().decode_tiled(_vae(vae), samples["samples"], tile_size // _DOWNSCALE, overlap // _DOWNSCALE)


@node(category="_for_testing", display_name="VAE Encode (Tiled)", description="")
def VAEEncodeTiled(
    pixels: Image,
    vae: Vae,
    tile_size: Annotated[int, Range(64, 4096, step=64)] = 512,
    overlap: Annotated[int, Range(0, 4096, step=32)] = 64,
    temporal_size: Annotated[int, Range(8, 4096, step=4),
                             Tooltip("Only used for video VAEs: Amount of frames to encode at a time.")] = 64,
    temporal_overlap: Annotated[int, Range(4, 4096, step=4),
                                Tooltip("Only used for video VAEs: Amount of frames to overlap.")] = 8,
) -> Latent:
    """Encodes images in overlapping tiles (less memory for big images); the temporal inputs are for video VAEs."""
    return {"samples": _ops().encode_tiled(_vae(vae), pixels, tile_size, overlap)}
