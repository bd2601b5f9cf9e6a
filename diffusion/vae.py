"""VAE decode and encode between LATENT and IMAGE, whole or in overlapping tiles.

IMAGE is ``[B, H, W, C]`` float32 in 0..1 on the CPU; LATENT samples are unscaled VAE
latents ``[B, 4, H/8, W/8]``. Decoding gives ``clamp((x + 1) / 2, 0, 1)``; encoding takes
the posterior mean of ``2 * image - 1`` after cropping the image (centred) to multiples of
8, as ComfyUI does. The tiled variants run the VAE on overlapping tiles whose overlaps are
blended with linear ramps, three times with different tile shapes (square, wide, tall)
averaged, so no seam lines up across passes (ComfyUI's scheme).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from diffusion.models import VAEModel
from diffusion.unet_patches.compute import compiled

#: Pixels per latent pixel of the SD/SDXL VAEs.
DOWNSCALE = 8
TileFn = Callable[[torch.Tensor], torch.Tensor]


def crop_to_multiple(pixels: torch.Tensor, multiple: int = DOWNSCALE) -> torch.Tensor:
    """An IMAGE ``[B, H, W, C]`` cropped (centred) so H and W are multiples of ``multiple``."""
    for dim in (1, 2):
        size = pixels.shape[dim]
        kept = (size // multiple) * multiple
        if kept != size:
            pixels = pixels.narrow(dim, (size % multiple) // 2, kept)
    return pixels


def _decode_fn(vae: VAEModel) -> TileFn:
    """Latent [b, 4, h, w] -> pixels in -1..1 [b, 3, 8h, 8w], float32 on the CPU."""
    def decode(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = z.to(vae.device, vae.dtype)
            if vae.compile_backend is None:
                return vae.model.decode(z, return_dict=False)[0].float().cpu()
            # AutoencoderKL.decode is post_quant_conv then the decoder; the decoder is what compiles
            model = vae.model
            if getattr(model, "post_quant_conv", None) is not None:
                z = model.post_quant_conv(z)
            return compiled(model.decoder, vae.compile_backend)(z).float().cpu()
    return decode


def _encode_fn(vae: VAEModel) -> TileFn:
    """Pixels in 0..1 [b, 3, H, W] -> posterior mean [b, 4, H/8, W/8], float32 on the CPU."""
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            posterior = vae.model.encode((pixels * 2.0 - 1.0).to(vae.device, vae.dtype), return_dict=False)[0]
            return posterior.mean.float().cpu()
    return encode


#: Output pixels per VAE call when a batch is split (the decoder's activations grow with it).
PIXELS_PER_CALL = 4 * 1024 * 1024


def _in_chunks(fn: TileFn, batch: torch.Tensor, pixels_each: int) -> torch.Tensor:
    """``fn`` over ``batch`` in as few calls as keep each under :data:`PIXELS_PER_CALL` pixels."""
    per_call = max(1, PIXELS_PER_CALL // max(1, pixels_each))
    return torch.cat([fn(batch[i:i + per_call]) for i in range(0, batch.shape[0], per_call)])


def decode(vae: VAEModel, samples: torch.Tensor) -> torch.Tensor:
    """LATENT samples -> IMAGE ``[B, H, W, 3]`` in 0..1 (big batches in several VAE calls)."""
    pixels_each = samples.shape[-1] * samples.shape[-2] * DOWNSCALE * DOWNSCALE
    images = _in_chunks(_decode_fn(vae), samples.float(), pixels_each)
    return ((images + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)


def encode(vae: VAEModel, pixels: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` -> LATENT samples (first 3 channels used, size cropped to multiples of 8)."""
    pixels = crop_to_multiple(pixels[..., :3]).movedim(-1, 1).float()
    return _in_chunks(_encode_fn(vae), pixels, pixels.shape[-1] * pixels.shape[-2])


def tiled_apply(samples: torch.Tensor, fn: TileFn, tile: tuple[int, int], overlap: int, scale: float,
                out_channels: int) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile`` (h, w) windows of ``samples`` and blend the results.

    ``scale`` is the output size per input pixel (8 decoding, 1/8 encoding). Tiles start
    every ``tile - overlap`` pixels; each tile's result is weighted by a mask that ramps
    linearly over ``overlap * scale`` output pixels at its borders, and the weighted sum is
    divided by the summed weights.
    """
    batch, _, height, width = samples.shape
    out_h, out_w = round(height * scale), round(width * scale)
    output = torch.empty((batch, out_channels, out_h, out_w))
    for b in range(batch):
        item = samples[b:b + 1]
        if height <= tile[0] and width <= tile[1]:
            output[b:b + 1] = fn(item)
            continue
        total = torch.zeros((1, out_channels, out_h, out_w))
        weight = torch.zeros_like(total)
        starts = [range(0, size - overlap, max(1, t - overlap)) if size > t else [0]
                  for size, t in ((height, tile[0]), (width, tile[1]))]
        for y0, x0 in itertools.product(*starts):
            y = max(0, min(height - overlap, y0))
            x = max(0, min(width - overlap, x0))
            h, w = min(tile[0], height - y), min(tile[1], width - x)
            result = fn(item[:, :, y:y + h, x:x + w])
            mask = torch.ones_like(result)
            feather = round(overlap * scale)
            for dim in (2, 3):
                if feather >= mask.shape[dim]:
                    continue
                for t in range(feather):
                    ramp = (t + 1) / feather
                    mask.narrow(dim, t, 1).mul_(ramp)
                    mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(ramp)
            oy, ox = round(y * scale), round(x * scale)
            rh, rw = result.shape[2], result.shape[3]
            total[:, :, oy:oy + rh, ox:ox + rw] += result * mask
            weight[:, :, oy:oy + rh, ox:ox + rw] += mask
        output[b:b + 1] = total / weight
    return output


def decode_tiled(vae: VAEModel, samples: torch.Tensor, tile: int = 64, overlap: int = 8) -> torch.Tensor:
    """Tiled :func:`decode`; ``tile`` and ``overlap`` in latent pixels (VAEDecodeTiled divides its inputs by 8)."""
    fn = _decode_fn(vae)
    samples = samples.float()
    passes = [tiled_apply(samples, fn, shape, overlap, DOWNSCALE, 3)
              for shape in ((tile * 2, tile // 2), (tile // 2, tile * 2), (tile, tile))]
    return (((passes[0] + passes[1] + passes[2]) / 3.0 + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)


def encode_tiled(vae: VAEModel, pixels: torch.Tensor, tile: int = 512, overlap: int = 64) -> torch.Tensor:
    """Tiled :func:`encode`; ``tile`` and ``overlap`` in image pixels."""
    pixels = crop_to_multiple(pixels[..., :3]).movedim(-1, 1).float()
    fn = _encode_fn(vae)
    channels = vae.model.config.latent_channels
    total = tiled_apply(pixels, fn, (tile, tile), overlap, 1 / DOWNSCALE, channels)
    total = total + tiled_apply(pixels, fn, (tile // 2, tile * 2), overlap, 1 / DOWNSCALE, channels)
    total = total + tiled_apply(pixels, fn, (tile * 2, tile // 2), overlap, 1 / DOWNSCALE, channels)
    return total / 3.0
