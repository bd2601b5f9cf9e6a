"""Image nodes that read or write files: loading from the output folder, webcam uploads, animated saves.

LoadImageOutput and WebcamCapture load as LoadImage does (``diffusion.images.load_image``);
SaveAnimatedPNG and SaveAnimatedWEBP name their file as SaveImage does and write it
atomically (``diffusion.image_ops_animated``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch

from diffusion.image_ops_animated import WEBP_METHODS, save_animated_png, save_animated_webp
from diffusion.images import load_image

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
    Socket,
    node,
)
from .folders import UnsafePathError, sha256_of, split_annotation
from .image import annotated_path
from .save_paths import save_target

_IMAGES = "comfy_extras.nodes_images"
_SIDE = 16384


# -- loading -----------------------------------------------------------------------------

_OUTPUT_LIST = {"route": "/internal/files/output", "refresh_button": True, "control_after_refresh": "first"}


def _output_image_path(services: Services, image: str) -> Path:
    """An output-folder image: ``x.png`` (or ``x.png [output]``; other annotations pick their folder)."""
    return annotated_path(services.folders, image if split_annotation(image)[1] else f"{image} [output]")


def _image_check(path_of: Any) -> tuple[Any, Any]:
    """A (fingerprint, validator) pair for an image-name input resolved by ``path_of(services, image)``."""

    def changed(image: str, services: Services) -> str:
        return sha256_of(path_of(services, image))

    def valid(image: str, services: Services) -> bool | str:
        try:
            exists = path_of(services, image).is_file()
        except UnsafePathError:
            exists = False
        return True if exists else f"Invalid image file: {image}"

    return changed, valid


@node(category="image", display_name="Load Image (from Outputs)", experimental=True)
def LoadImageOutput(
    image: Annotated[str, OneOf(None), Input(image_upload=True, image_folder="output", remote=_OUTPUT_LIST)],
    *,
    ctx: Context,
) -> tuple[Image, Mask]:
    """Loads an image from the output folder (a result of an earlier run), with its alpha as a mask."""
    return load_image(_output_image_path(ctx.services, image))


_changed, _valid = _image_check(_output_image_path)
LoadImageOutput.fingerprint(_changed)
LoadImageOutput.validator(_valid)


def _input_image_path(services: Services, image: str) -> Path:
    return annotated_path(services.folders, image)


@node(category="image", display_name="Webcam Capture", python_module="comfy_extras.nodes_webcam")
def WebcamCapture(
    image: Socket("WEBCAM"),
    width: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    height: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    capture_on_queue: bool = True,
    *,
    ctx: Context,
) -> Image:
    """Loads the webcam frame the editor uploaded (a file in the input folder, named like LoadImage's)."""
    return load_image(_input_image_path(ctx.services, image))[0]


_changed, _valid = _image_check(_input_image_path)
WebcamCapture.fingerprint(_changed)
WebcamCapture.validator(_valid)


# -- animated saves ----------------------------------------------------------------------


def _save_animated(images: torch.Tensor, prefix: str, ctx: Context, extension: str, write: Any) -> Result:
    """Name the file as SaveImage does, write it with ``write(path)``, and report it to the editor."""
    target = save_target(ctx.folders.output_dir, prefix, images.shape[2], images.shape[1])
    name = f"{target.filename}_{target.counter:05}_.{extension}"
    write(target.folder / name)
    entry = {"filename": name, "subfolder": target.subfolder, "type": "output"}
    return Result(ui={"images": [entry], "animated": [images.shape[0] != 1 or extension == "png"]})


@node(category="image/animation", display_name="SaveAnimatedPNG", output_node=True, python_module=_IMAGES)
def SaveAnimatedPNG(
    images: Image,
    filename_prefix: str = "ComfyUI",
    fps: Annotated[float, Range(0.01, 1000.0, step=0.01)] = 6.0,
    compress_level: Annotated[int, Range(0, 9)] = 4,
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Saves the batch as one animated PNG in the output folder."""
    return _save_animated(images, filename_prefix, ctx, "png", lambda path: save_animated_png(
        images, path, fps, compress_level, prompt, extra_pnginfo))


@node(category="image/animation", display_name="SaveAnimatedWEBP", output_node=True, python_module=_IMAGES)
def SaveAnimatedWEBP(
    images: Image,
    filename_prefix: str = "ComfyUI",
    fps: Annotated[float, Range(0.01, 1000.0, step=0.01)] = 6.0,
    lossless: bool = True,
    quality: Annotated[int, Range(0, 100)] = 80,
    method: Annotated[str, OneOf(tuple(WEBP_METHODS))] = REQUIRED,
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Saves the batch as one animated WebP in the output folder."""
    return _save_animated(images, filename_prefix, ctx, "webp", lambda path: save_animated_webp(
        images, path, fps, lossless, quality, method, prompt, extra_pnginfo))
