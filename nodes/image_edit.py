"""Image editing nodes: batches, transforms, filters, compositing, outpaint padding, animated saves.

IMAGE is ``[B, H, W, C]`` float in 0..1, MASK ``[B, H, W]``. Names, inputs and categories
are those of ComfyUI's ``nodes.py`` and ``comfy_extras`` image nodes; the pixel work is in
``diffusion.image_ops*``.
"""

from __future__ import annotations

import math
from typing import Annotated, NamedTuple

import torch

from diffusion.image_ops import (
    BLEND_MODES,
    DITHERS,
    blend,
    composite,
    gaussian_blur,
    pad_for_outpaint,
    quantize,
    resize_image,
    rgb_to_ycbcr,
    sharpen,
    ycbcr_to_rgb,
)
from diffusion.image_ops_filters import MORPHOLOGY_OPERATIONS, canny, morphology
from diffusion.resize import IMAGE_UPSCALE_METHODS

from .api import (
    REQUIRED,
    Image,
    Mask,
    OneOf,
    Range,
    Seed,
    UniqueId,
    node,
)

_NODES = "nodes"
_IMAGES = "comfy_extras.nodes_images"
_POST = "comfy_extras.nodes_post_processing"
_MORPH = "comfy_extras.nodes_morphology"
_SIDE = 16384


def _crop_origin(x: int, y: int, width: int, height: int, what: str) -> None:
    """Raise when a crop starting at ``(x, y)`` lies wholly outside a ``width`` x ``height`` picture."""
    if x >= width or y >= height:
        raise ValueError(f"the crop starts at ({x}, {y}), outside the {width}x{height} {what}")


# -- sizes and batches -------------------------------------------------------------------


class ImageSize(NamedTuple):
    width: int
    height: int
    batch_size: int


@node(category="image", display_name="Get Image Size", python_module=_IMAGES)
def GetImageSize(image: Image, unique_id: UniqueId = None) -> ImageSize:
    """The width, height and batch size of an image batch."""
    return ImageSize(image.shape[2], image.shape[1], image.shape[0])


@node(category="image", display_name="ImageAddNoise", python_module=_IMAGES)
def ImageAddNoise(
    image: Image,
    seed: Annotated[int, Seed()] = 0,
    strength: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.5,
) -> Image:
    """Adds seeded Gaussian noise times ``strength`` to the image, clamped to 0..1."""
    generator = torch.manual_seed(seed)
    noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
    return torch.clamp(image + strength * noise, 0.0, 1.0)


def _with_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Pad the channel axis with 1.0 (an opaque alpha) up to ``channels``."""
    extra = channels - image.shape[-1]
    if extra <= 0:
        return image
    return torch.cat((image, torch.ones((*image.shape[:-1], extra), dtype=image.dtype)), dim=-1)


@node(category="image", display_name="Batch Images")
def ImageBatch(image1: Image, image2: Image) -> Image:
    """Joins two image batches; the second is resized (bilinear, centre crop) to the first's size if needed."""
    channels = max(image1.shape[-1], image2.shape[-1])
    image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
    if image1.shape[1:3] != image2.shape[1:3]:
        image2 = resize_image(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
    return torch.cat((image1, image2), dim=0)


@node(category="image/batch", display_name="ImageFromBatch", python_module=_IMAGES)
def ImageFromBatch(
    image: Image,
    batch_index: Annotated[int, Range(0, 4095)] = 0,
    length: Annotated[int, Range(1, 4096)] = 1,
) -> Image:
    """Takes ``length`` images starting at ``batch_index`` (both cut to what the batch has)."""
    start = min(image.shape[0] - 1, batch_index)
    count = min(image.shape[0] - start, length)
    return image[start : start + count].clone()


@node(category="image/batch", display_name="Rebatch Images", python_module="comfy_extras.nodes_rebatch",
      input_is_list=True)
def RebatchImages(images: Image, batch_size: Annotated[int, Range(1, 4096)] = 1) -> list[Image]:
    """Regroups the images of every incoming batch into batches of ``batch_size`` (the last may be smaller)."""
    size = batch_size[0] if isinstance(batch_size, list) else batch_size
    singles = [batch[i : i + 1] for batch in images for i in range(batch.shape[0])]
    shapes = {tuple(s.shape[1:]) for s in singles}
    if len(shapes) > 1:
        raise ValueError(f"cannot rebatch images of different sizes: {sorted(shapes)}")
    return [torch.cat(singles[i : i + size]) for i in range(0, len(singles), size)]


@node(category="image/batch", display_name="RepeatImageBatch", python_module=_IMAGES)
def RepeatImageBatch(image: Image, amount: Annotated[int, Range(1, 4096)] = 1) -> Image:
    """Repeats the whole batch ``amount`` times."""
    return image.repeat((amount, 1, 1, 1))


class YUV(NamedTuple):
    Y: Image
    U: Image
    V: Image


@node(category="image/batch", python_module=_MORPH)
def ImageRGBToYUV(image: Image) -> YUV:
    """Splits an RGB image into Y, Cb (U) and Cr (V) planes, each shown as a grey image."""
    planes = rgb_to_ycbcr(image[..., :3])
    return YUV(*(planes[..., i : i + 1].expand(*image.shape[:-1], 3) for i in range(3)))


@node(category="image/batch", python_module=_MORPH)
def ImageYUVToRGB(Y: Image, U: Image, V: Image) -> Image:
    """Joins Y, U and V planes (each averaged over its channels) back into RGB."""
    if not (Y.shape[:3] == U.shape[:3] == V.shape[:3]):
        raise ValueError(f"Y, U and V must have the same size, got {tuple(Y.shape)}, {tuple(U.shape)}, "
                         f"{tuple(V.shape)}")
    planes = torch.cat([p.mean(dim=-1, keepdim=True) for p in (Y, U, V)], dim=-1)
    return ycbcr_to_rgb(planes)


# -- post-processing -------------------------------------------------------------------


@node(category="image/postprocessing", python_module=_POST)
def ImageBlend(
    image1: Image,
    image2: Image,
    blend_factor: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.5,
    blend_mode: Annotated[str, OneOf(BLEND_MODES, v3=True)] = REQUIRED,
) -> Image:
    """Blends image2 over image1 with a blend mode, mixed in by ``blend_factor``."""
    return blend(image1, image2, blend_factor, blend_mode)


@node(category="image/postprocessing", python_module=_POST)
def ImageBlur(
    image: Image,
    blur_radius: Annotated[int, Range(1, 31, step=1)] = 1,
    sigma: Annotated[float, Range(0.1, 10.0, step=0.1)] = 1.0,
) -> Image:
    """Gaussian blur with a ``2 * blur_radius + 1`` kernel."""
    return gaussian_blur(image, blur_radius, sigma)


@node(category="image/postprocessing", python_module=_POST)
def ImageQuantize(
    image: Image,
    colors: Annotated[int, Range(1, 256, step=1)] = 256,
    dither: Annotated[str, OneOf(DITHERS, v3=True)] = REQUIRED,
) -> Image:
    """Reduces each image to at most ``colors`` colours, optionally dithered."""
    return quantize(image, colors, dither)


@node(category="image/postprocessing", python_module=_POST)
def ImageSharpen(
    image: Image,
    sharpen_radius: Annotated[int, Range(1, 31, step=1)] = 1,
    sigma: Annotated[float, Range(0.1, 10.0, step=0.01)] = 1.0,
    alpha: Annotated[float, Range(0.0, 5.0, step=0.01)] = 1.0,
) -> Image:
    """Unsharp-style sharpening: the image minus ``alpha``-weighted blur around each pixel."""
    return sharpen(image, sharpen_radius, sigma, alpha)


@node(category="image/postprocessing", display_name="ImageMorphology", python_module=_MORPH)
def Morphology(
    image: Image,
    operation: Annotated[str, OneOf(MORPHOLOGY_OPERATIONS, v3=True)],
    kernel_size: Annotated[int, Range(3, 999, step=1)] = 3,
) -> Image:
    """Grey morphology (erode, dilate, open, close, gradient, top/bottom hat) with a square kernel."""
    return morphology(image.movedim(-1, 1), operation, kernel_size).movedim(1, -1)


@node(category="image/preprocessors", python_module="comfy_extras.nodes_canny")
def Canny(
    image: Image,
    low_threshold: Annotated[float, Range(0.01, 0.99, step=0.01)] = 0.4,
    high_threshold: Annotated[float, Range(0.01, 0.99, step=0.01)] = 0.8,
) -> Image:
    """Canny edge detection: white edges on black."""
    edges = canny(image[..., :3].movedim(-1, 1), low_threshold, high_threshold)
    return edges.repeat(1, 3, 1, 1).movedim(1, -1)


# -- transforms --------------------------------------------------------------------------


@node(category="image/transform", display_name="Image Crop", python_module=_IMAGES)
def ImageCrop(
    image: Image,
    width: Annotated[int, Range(1, _SIDE, step=1)] = 512,
    height: Annotated[int, Range(1, _SIDE, step=1)] = 512,
    x: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    y: Annotated[int, Range(0, _SIDE, step=1)] = 0,
) -> Image:
    """Crops a width x height area at (x, y); an area running past the edges is cut at them."""
    _crop_origin(x, y, image.shape[2], image.shape[1], "image")
    return image[:, y : y + height, x : x + width, :]


FLIP_METHODS = ("x-axis: vertically", "y-axis: horizontally")
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


@node(category="image/transform", display_name="ImageFlip", python_module=_IMAGES)
def ImageFlip(image: Image, flip_method: Annotated[str, OneOf(FLIP_METHODS)]) -> Image:
    """Mirrors the image upside down (x-axis) or left to right (y-axis)."""
    return torch.flip(image, dims=[1] if flip_method.startswith("x") else [2])


@node(category="image/transform", display_name="ImageRotate", python_module=_IMAGES)
def ImageRotate(image: Image, rotation: Annotated[str, OneOf(ROTATIONS)]) -> Image:
    """Rotates the image clockwise by a multiple of 90 degrees."""
    return torch.rot90(image, k=ROTATIONS.index(rotation), dims=[2, 1])


STITCH_DIRECTIONS = ("right", "down", "left", "up")
SPACING_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _pad_centered(image: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Zero-pad axis ``dim`` (1 = height, 2 = width) to ``size``, split evenly (the extra pixel after)."""
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before = missing // 2
    pad = [0, 0, before, missing - before] if dim == 2 else [0, 0, 0, 0, before, missing - before]
    return torch.nn.functional.pad(image, pad)


@node(category="image/transform", display_name="Image Stitch", python_module=_IMAGES)
def ImageStitch(
    image1: Image,
    direction: Annotated[str, OneOf(STITCH_DIRECTIONS)] = "right",
    match_image_size: bool = True,
    spacing_width: Annotated[int, Range(0, 1024, step=2)] = 0,
    spacing_color: Annotated[str, OneOf(tuple(SPACING_COLORS))] = "white",
    image2: Image | None = None,
) -> Image:
    """Places image2 beside image1 (right, down, left or up), optionally scaled to match and spaced apart."""
    if image2 is None:
        return image1
    batch = max(image1.shape[0], image2.shape[0])
    image1 = torch.cat([image1, image1[-1:].repeat(batch - image1.shape[0], 1, 1, 1)])
    image2 = torch.cat([image2, image2[-1:].repeat(batch - image2.shape[0], 1, 1, 1)])
    sideways = direction in ("left", "right")
    if match_image_size:
        (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
        new_w, new_h = (int(h1 * (w2 / h2)), h1) if sideways else (w1, int(w1 / (w2 / h2)))
        image2 = resize_image(image2, new_w, new_h, "lanczos")
    else:
        dim = 1 if sideways else 2
        side = max(image1.shape[dim], image2.shape[dim])
        image1, image2 = _pad_centered(image1, side, dim), _pad_centered(image2, side, dim)
    channels = max(image1.shape[-1], image2.shape[-1])
    image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
    parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
    if spacing_width > 0:
        width = spacing_width + spacing_width % 2
        shape = ((batch, max(image1.shape[1], image2.shape[1]), width, channels) if sideways
                 else (batch, width, max(image1.shape[2], image2.shape[2]), channels))
        spacer = torch.zeros(shape, dtype=image1.dtype)
        colour = SPACING_COLORS[spacing_color]
        for i in range(min(3, channels)):
            spacer[..., i] = colour[i]
        if channels == 4:
            spacer[..., 3] = 1.0
        parts.insert(1, spacer)
    return torch.cat(parts, dim=2 if sideways else 1)


@node(category="image/transform", display_name="ResizeAndPadImage", python_module=_IMAGES)
def ResizeAndPadImage(
    image: Image,
    target_width: Annotated[int, Range(1, _SIDE, step=1)] = 512,
    target_height: Annotated[int, Range(1, _SIDE, step=1)] = 512,
    padding_color: Annotated[str, OneOf(("white", "black"))] = REQUIRED,
    interpolation: Annotated[str, OneOf(("area", "bicubic", "nearest-exact", "bilinear", "lanczos"))] = REQUIRED,
) -> Image:
    """Scales the image to fit inside the target size, keeping its aspect, and pads the rest centred."""
    batch, height, width, channels = image.shape
    scale = min(target_width / width, target_height / height)
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    resized = resize_image(image, new_w, new_h, interpolation)
    out = torch.full((batch, target_height, target_width, channels), 0.0 if padding_color == "black" else 1.0,
                     dtype=image.dtype)
    top, left = (target_height - new_h) // 2, (target_width - new_w) // 2
    out[:, top : top + new_h, left : left + new_w, :] = resized
    return out


@node(category="image/upscaling", display_name="ImageScaleToMaxDimension", python_module=_IMAGES)
def ImageScaleToMaxDimension(
    image: Image,
    upscale_method: Annotated[str, OneOf(("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"))],
    largest_size: Annotated[int, Range(0, _SIDE, step=1)] = 512,
) -> Image:
    """Scales the image so that its longer side is ``largest_size``."""
    if largest_size < 1:
        raise ValueError("largest_size must be at least 1")
    height, width = image.shape[1:3]
    if height > width:
        width, height = round(width / height * largest_size), largest_size
    elif width > height:
        width, height = largest_size, round(height / width * largest_size)
    else:
        width = height = largest_size
    return resize_image(image, max(1, width), max(1, height), upscale_method)


@node(category="image/upscaling", python_module=_POST)
def ImageScaleToTotalPixels(
    image: Image,
    upscale_method: Annotated[str, OneOf(IMAGE_UPSCALE_METHODS, v3=True)],
    megapixels: Annotated[float, Range(0.01, 16.0, step=0.01)] = 1.0,
) -> Image:
    """Scales the image, keeping its aspect, to about ``megapixels`` x 1024 x 1024 pixels."""
    scale = math.sqrt(int(megapixels * 1024 * 1024) / (image.shape[1] * image.shape[2]))
    width, height = round(image.shape[2] * scale), round(image.shape[1] * scale)
    return resize_image(image, max(1, width), max(1, height), upscale_method)


# -- compositing and outpainting ---------------------------------------------------------


@node(category="image", display_name="ImageCompositeMasked", python_module="comfy_extras.nodes_mask")
def ImageCompositeMasked(
    destination: Image,
    source: Image,
    x: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    y: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    resize_source: bool = False,
    mask: Mask | None = None,
) -> Image:
    """Pastes source onto destination at (x, y) through an optional mask; what falls past the edges is dropped."""
    channels = destination.shape[-1]
    if source.shape[-1] < channels:
        source = _with_channels(source, channels)
    out = composite(destination.movedim(-1, 1), source[..., :channels].movedim(-1, 1), x, y, mask, 1, resize_source)
    return out.movedim(1, -1)


@node(category="image", display_name="Pad Image for Outpainting")
def ImagePadForOutpaint(
    image: Image,
    left: Annotated[int, Range(0, _SIDE, step=8)] = 0,
    top: Annotated[int, Range(0, _SIDE, step=8)] = 0,
    right: Annotated[int, Range(0, _SIDE, step=8)] = 0,
    bottom: Annotated[int, Range(0, _SIDE, step=8)] = 0,
    feathering: Annotated[int, Range(0, _SIDE, step=1)] = 40,
) -> tuple[Image, Mask]:
    """Adds grey borders to outpaint into, and a mask: 1 on the borders, fading over ``feathering`` pixels inside."""
    return pad_for_outpaint(image, left, top, right, bottom, feathering)
