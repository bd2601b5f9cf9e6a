"""Pixel operations behind the image nodes: blending, blurring, sharpening, quantizing, compositing, padding.

IMAGE tensors are ``[B, H, W, C]`` float in 0..1 and MASK ``[B, H, W]`` (PROTOCOL.md 9.7). The
formulas are the ones ComfyUI's nodes use, so a workflow gives the same pixels here and there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffusion.resize import upscale

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")
DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")


def resize_image(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize an IMAGE ``[B, H, W, C]`` with one of the ``diffusion.resize`` methods."""
    return upscale(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


def _soft_light_curve(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


def blend(image1: torch.Tensor, image2: torch.Tensor, factor: float, mode: str) -> torch.Tensor:
    """Blend ``image2`` over ``image1``: ``image1 * (1 - factor) + mode(image1, image2) * factor``, clamped to 0..1.

    ``image2`` is resized (bicubic, centre crop) to ``image1``'s size when they differ.
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")
    if image1.shape[-1] != image2.shape[-1]:
        raise ValueError(f"cannot blend a {image2.shape[-1]}-channel image into a {image1.shape[-1]}-channel one")
    if image1.shape[1:3] != image2.shape[1:3]:
        image2 = resize_image(image2, image1.shape[2], image1.shape[1], "bicubic", "center")
    a, b = image1, image2.to(image1.dtype)
    if mode == "normal":
        mixed = b
    elif mode == "multiply":
        mixed = a * b
    elif mode == "screen":
        mixed = 1 - (1 - a) * (1 - b)
    elif mode == "overlay":
        mixed = torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    elif mode == "soft_light":
        mixed = torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (_soft_light_curve(a) - a))
    else:  # difference, signed as ComfyUI computes it (then clamped)
        mixed = a - b
    return torch.clamp(a * (1 - factor) + mixed * factor, 0, 1)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A ``size`` x ``size`` Gaussian summing to 1, its coordinates spread over -1..1 (ComfyUI's kernel)."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every channel of an IMAGE with ``kernel`` after reflect padding (output keeps the size)."""
    radius = kernel.shape[-1] // 2
    channels = image.shape[-1]
    x = image.movedim(-1, 1)
    if min(x.shape[-2:]) <= radius:
        raise ValueError(f"the image ({x.shape[-1]}x{x.shape[-2]}) is too small for a radius of {radius}")
    x = F.pad(x, (radius,) * 4, mode="reflect")
    weight = kernel.to(image.dtype).expand(channels, 1, -1, -1)
    return F.conv2d(x, weight, groups=channels).movedim(1, -1)


def gaussian_blur(image: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """ImageBlur: a ``2 * radius + 1`` Gaussian (see :func:`gaussian_kernel`); radius 0 leaves the image."""
    if radius == 0:
        return image
    return _filter(image, gaussian_kernel(radius * 2 + 1, sigma))


def sharpen(image: torch.Tensor, radius: int, sigma: float, alpha: float) -> torch.Tensor:
    """ImageSharpen: subtract ``alpha * 10`` blurred copies and add back the rest at the centre, clamped to 0..1."""
    if radius == 0:
        return image
    size = radius * 2 + 1
    kernel = gaussian_kernel(size, sigma) * -(alpha * 10)
    kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
    return torch.clamp(_filter(image, kernel), 0, 1)


def _bayer_matrix(level: int) -> np.ndarray:
    """The ``2**level`` square ordered-dither matrix, centred on 0 and scaled to -0.5..0.5."""
    if level == 0:
        return np.zeros((1, 1), dtype=np.float32)
    q = 4**level
    m = q * _bayer_matrix(level - 1)
    return np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q


def _bayer_dither(image: Image.Image, palette: Image.Image, order: int) -> Image.Image:
    """Add the tiled Bayer threshold (spread over one palette step) and map to the palette without dithering."""
    colours = len(palette.getpalette() or ()) // 3
    spread = 2 * 256 / max(colours, 1)
    matrix = spread * _bayer_matrix(int(math.log2(order))) + 0.5
    pixels = np.asarray(image, dtype=np.float32)
    reps = (math.ceil(pixels.shape[0] / matrix.shape[0]), math.ceil(pixels.shape[1] / matrix.shape[1]))
    tiled = np.tile(matrix, reps)[: pixels.shape[0], : pixels.shape[1], None]
    shifted = np.clip(pixels + tiled, 0, 255).astype(np.uint8)
    return Image.fromarray(shifted).quantize(palette=palette, dither=Image.Dither.NONE)


def quantize(image: torch.Tensor, colors: int, dither: str) -> torch.Tensor:
    """ImageQuantize: reduce each image to a ``colors``-entry palette (PIL's median cut), dithered as asked."""
    if dither not in DITHERS:
        raise ValueError(f"unknown dither {dither!r}; expected one of {', '.join(DITHERS)}")
    if image.shape[-1] != 3:
        raise ValueError(f"ImageQuantize needs an RGB image, got {image.shape[-1]} channels")
    out = torch.zeros_like(image)
    for index, frame in enumerate(image):
        pil = Image.fromarray((frame.float() * 255).clamp(0, 255).to(torch.uint8).cpu().numpy(), mode="RGB")
        palette = pil.quantize(colors=colors)  # a palette image first: quantizing to it is what applies dithering
        if dither == "none":
            done = pil.quantize(palette=palette, dither=Image.Dither.NONE)
        elif dither == "floyd-steinberg":
            done = pil.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        else:
            done = _bayer_dither(pil, palette, int(dither.split("-")[-1]))
        out[index] = torch.from_numpy(np.asarray(done.convert("RGB"), dtype=np.float32) / 255.0)
    return out


_LUMA = (0.299, 0.587, 0.114)
_CB, _CR = 0.564, 0.713  # scales of B - Y and R - Y


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """RGB to YCbCr (BT.601 luma, Cb/Cr offset by 0.5), channels last, as kornia computes it."""
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    y = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    return torch.stack((y, (b - y) * _CB + 0.5, (r - y) * _CR + 0.5), dim=-1)


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """The exact inverse of :func:`rgb_to_ycbcr`, clamped to 0..1 (kornia 0.9's ``ycbcr_to_rgb``), channels last."""
    y, cb, cr = image[..., 0], image[..., 1] - 0.5, image[..., 2] - 0.5
    r_minus_y, b_minus_y = cr / _CR, cb / _CB
    g = y - (_LUMA[0] * r_minus_y + _LUMA[2] * b_minus_y) / _LUMA[1]
    return torch.stack((y + r_minus_y, g, y + b_minus_y), dim=-1).clamp(0, 1)


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Cycle (or cut) the first axis to ``batch`` entries."""
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] > batch:
        return tensor[:batch]
    reps = math.ceil(batch / tensor.shape[0])
    return tensor.repeat((reps,) + (1,) * (tensor.ndim - 1))[:batch]


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 1, resize_source: bool = False) -> torch.Tensor:
    """Paste ``source`` into a copy of ``destination`` (both ``[B, C, H, W]``) at ``(x, y)``, through ``mask``.

    ``x``/``y`` are in units of ``multiplier`` pixels (8 for latents given in pixels); the
    part of the source past the destination's edges is dropped. ``mask`` (any ``[..., h, w]``)
    is resized bilinearly to the source. ``resize_source`` first stretches the source to
    the destination's size.
    """
    destination = destination.clone()
    source = source.to(destination.device, destination.dtype)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[2:], mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[3] * multiplier, min(x, destination.shape[3] * multiplier))
    y = max(-source.shape[2] * multiplier, min(y, destination.shape[2] * multiplier))
    left, top = x // multiplier, y // multiplier
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(destination.device, destination.dtype).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        mask = repeat_to_batch(F.interpolate(mask, size=source.shape[2:], mode="bilinear"), source.shape[0])
    # Clip the source rectangle to the destination on all four sides.
    src_top, src_left = max(0, -top), max(0, -left)
    dst_top, dst_left = max(0, top), max(0, left)
    height = min(source.shape[2] - src_top, destination.shape[2] - dst_top)
    width = min(source.shape[3] - src_left, destination.shape[3] - dst_left)
    if height <= 0 or width <= 0:
        return destination
    m = mask[:, :, src_top : src_top + height, src_left : src_left + width]
    s = source[:, :, src_top : src_top + height, src_left : src_left + width]
    region = destination[:, :, dst_top : dst_top + height, dst_left : dst_left + width]
    destination[:, :, dst_top : dst_top + height, dst_left : dst_left + width] = m * s + (1 - m) * region
    return destination


def pad_for_outpaint(image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ImagePadForOutpaint: grey (0.5) borders, and a mask that is 1 on them and fades into the image.

    Inside the original image the mask is ``((feathering - d) / feathering) ** 2`` where ``d``
    is the distance to the nearest padded side (sides not padded do not count), 0 from
    ``feathering`` pixels in; no fade when ``2 * feathering`` is not below both sides.
    Returns ``(IMAGE, MASK [1, H, W])``.
    """
    batch, height, width, channels = image.shape
    out = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5, dtype=torch.float32)
    out[:, top : top + height, left : left + width, :] = image
    mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
    inner = torch.zeros((height, width), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
        cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
        far_h, far_w = torch.full_like(rows, height), torch.full_like(cols, width)
        distance = torch.stack((
            rows if top else far_h, height - rows if bottom else far_h,
            cols if left else far_w, width - cols if right else far_w,
        )).amin(dim=0)
        fade = ((feathering - distance) / feathering) ** 2
        inner = torch.where(distance < feathering, fade, inner)
    mask[top : top + height, left : left + width] = inner
    return out, mask[None]
