"""Image nodes: loading, saving and previewing PNGs, resizing, inverting, solid-colour images.

IMAGE is ``[B, H, W, C]`` float in 0..1 and MASK ``[B, H, W]``. SaveImage and PreviewImage
name their files and write their metadata as ComfyUI does (PROTOCOL.md 7), so the
editor's history, ``/view`` and drag-and-drop of a saved PNG work unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch

from diffusion.images import load_image, png_text, save_png
from diffusion.resize import CROP_METHODS, IMAGE_UPSCALE_METHODS, upscale

from .api import (
    REQUIRED,
    Context,
    ExtraPngInfo,
    HiddenPrompt,
    Image,
    Input,
    Mask,
    OneOf,
    Range,
    Result,
    Services,
    Tooltip,
    files_in_input,
    node,
)
from .folders import Folders, UnsafePathError, safe_relative, sha256_of, split_annotation
from .latent import MAX_RESOLUTION
from .save_paths import save_target

_PREVIEW_CHARS = "abcdefghijklmnopqrstupvxyz"  # ComfyUI's alphabet, "p" twice and no "w" included

_PREFIX_TOOLTIP = ("The prefix for the file to save. This may include formatting information such as "
                   "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")


def annotated_path(folders: Folders, name: str) -> Path:
    """The file a LoadImage name points at: ``x.png`` in the input folder, ``x.png [output]`` in the output one...

    Raises :class:`~nodes.folders.UnsafePathError` for a name that would leave its folder.
    """
    name, kind = split_annotation(name)
    return folders.directory(kind or "input").joinpath(*safe_relative(name).parts)


def _save_images(
    images: torch.Tensor,
    folder: Path,
    prefix: str,
    kind: str,
    compress_level: int,
    prompt: Mapping[str, Any] | None,
    extra_pnginfo: Mapping[str, Any] | None,
) -> Result:
    """Write each image of the batch as a PNG with the prompt/workflow chunks; the editor's ``ui`` entry."""
    height, width = images.shape[1], images.shape[2]
    target = save_target(folder, prefix, width, height)
    text = png_text(prompt, extra_pnginfo)
    results = []
    for index, image in enumerate(images):
        filename = target.filename.replace("%batch_num%", str(index))
        name = f"{filename}_{target.counter + index:05}_.png"
        save_png(image, target.folder / name, text, compress_level=compress_level)
        results.append({"filename": name, "subfolder": target.subfolder, "type": kind})
    return Result(ui={"images": results})


@node(category="image", display_name="Save Image", output_node=True)
def SaveImage(
    images: Annotated[Image, Tooltip("The images to save.")],
    filename_prefix: Annotated[str, Tooltip(_PREFIX_TOOLTIP)] = "ComfyUI",
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Saves the input images to your ComfyUI output directory."""
    return _save_images(images, ctx.folders.output_dir, filename_prefix, "output", 4, prompt, extra_pnginfo)


@node(category="image", display_name="Preview Image", output_node=True)
def PreviewImage(
    images: Image,
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Saves the input images to the temporary folder and shows them in the editor."""
    prefix = "ComfyUI_temp_" + "".join(random.choices(_PREVIEW_CHARS, k=5))
    return _save_images(images, ctx.folders.temp_dir, prefix, "temp", 1, prompt, extra_pnginfo)


@node(category="image", display_name="Load Image")
def LoadImage(
    image: Annotated[str, OneOf(files_in_input(("image",))), Input(image_upload=True)],
    *,
    ctx: Context,
) -> tuple[Image, Mask]:
    """Loads an image from the input folder, with its alpha channel as a mask (1 where transparent)."""
    return load_image(annotated_path(ctx.folders, image))


@LoadImage.fingerprint
def _load_image_changed(image: str, services: Services) -> str:
    """The file's SHA-256: a re-uploaded image under the same name runs the node again."""
    return sha256_of(annotated_path(services.folders, image))


@LoadImage.validator
def _load_image_valid(image: str, services: Services) -> bool | str:
    """The named file must exist."""
    try:
        exists = annotated_path(services.folders, image).is_file()
    except UnsafePathError:
        exists = False
    return True if exists else f"Invalid image file: {image}"


MASK_CHANNELS = ("alpha", "red", "green", "blue")


@node(category="mask", display_name="Load Image (as Mask)")
def LoadImageMask(
    image: Annotated[str, OneOf(files_in_input(("image",))), Input(image_upload=True)],
    channel: Annotated[str, OneOf(MASK_CHANNELS)],
    *,
    ctx: Context,
) -> Mask:
    """Loads one channel of an image from the input folder as a mask; for alpha, 1 is where it is transparent."""
    pixels, alpha_mask = load_image(annotated_path(ctx.folders, image))
    height, width = pixels.shape[1:3]
    if channel != "alpha":
        return pixels[:1, :, :, MASK_CHANNELS.index(channel) - 1].clone()
    if alpha_mask.shape[1:] != (height, width):  # no alpha channel: nothing is masked
        return torch.zeros((1, height, width), dtype=torch.float32)
    return alpha_mask[:1].clone()


LoadImageMask.fingerprint(_load_image_changed)
LoadImageMask.validator(_load_image_valid)


@node(category="image/upscaling", display_name="Upscale Image")
def ImageScale(
    image: Image,
    upscale_method: Annotated[str, OneOf(IMAGE_UPSCALE_METHODS)],
    width: Annotated[int, Range(0, MAX_RESOLUTION, step=1)] = 512,
    height: Annotated[int, Range(0, MAX_RESOLUTION, step=1)] = 512,
    crop: Annotated[str, OneOf(CROP_METHODS)] = REQUIRED,
) -> Image:
    """Resizes images to width x height; a 0 side keeps the aspect ratio, both 0 leave them as they are."""
    if width == 0 and height == 0:
        return image
    if width == 0:
        width = max(1, round(image.shape[2] * height / image.shape[1]))
    elif height == 0:
        height = max(1, round(image.shape[1] * width / image.shape[2]))
    return upscale(image.movedim(-1, 1), width, height, upscale_method, crop).movedim(1, -1)


@node(category="image/upscaling", display_name="Upscale Image By")
def ImageScaleBy(
    image: Image,
    upscale_method: Annotated[str, OneOf(IMAGE_UPSCALE_METHODS)],
    scale_by: Annotated[float, Range(0.01, 8.0, step=0.01)] = 1.0,
) -> Image:
    """Resizes images by a factor."""
    width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
    return upscale(image.movedim(-1, 1), width, height, upscale_method, "disabled").movedim(1, -1)


@node(category="image", display_name="Invert Image")
def ImageInvert(image: Image) -> Image:
    """Inverts the colours of images (1 - value)."""
    return 1.0 - image


@node(category="image")
def EmptyImage(
    width: Annotated[int, Range(1, MAX_RESOLUTION, step=1)] = 512,
    height: Annotated[int, Range(1, MAX_RESOLUTION, step=1)] = 512,
    batch_size: Annotated[int, Range(1, 4096)] = 1,
    color: Annotated[int, Range(0, 0xFFFFFF, step=1, display="color")] = 0,
) -> Image:
    """A batch of images filled with one colour, given as 0xRRGGBB."""
    rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 0xFF
    return rgb.expand(batch_size, height, width, 3).clone()
