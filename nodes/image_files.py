"""Image nodes that read or write files: loading from the output folder, webcam uploads, animated saves.

LoadImageOutput and WebcamCapture load as LoadImage does (``diffusion.images.load_image``);
SaveAnimatedPNG and SaveAnimatedWEBP name their file as SaveImage does and write it
atomically (``diffusion.image_ops_animated``).
"""

from __future__ import annotations

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
from .folders import split_annotation
from .image import LoadImage, annotated_path
from .save_paths import save_target

_IMAGES = "comfy_extras.nodes_images"
_SIDE = 16384


# -- loading -----------------------------------------------------------------------------

_OUTPUT_LIST = {"route": "/internal/files/output", "refresh_button": True, "control_after_refresh": "first"}


def _as_output(image: str) -> str:
    """An output-folder name: a bare ``x.png`` means ``x.png [output]``; an annotated one keeps its folder."""
    return image if split_annotation(image)[1] else f"{image} [output]"


@node(category="image", display_name="Load Image (from Outputs)", experimental=True)
def LoadImageOutput(
    image: Annotated[str, OneOf(None), Input(image_upload=True, image_folder="output", remote=_OUTPUT_LIST)],
    *,
    ctx: Context,
) -> tuple[Image, Mask]:
    """Loads an image from the output folder (a result of an earlier run), with its alpha as a mask."""
    return load_image(annotated_path(ctx.folders, _as_output(image)))


@LoadImageOutput.fingerprint
def _output_changed(image: str, services: Services) -> Any:
    """LoadImage's check (the file's hash) on the output-folder name."""
    return LoadImage.fingerprint_fn(_as_output(image), services)


@LoadImageOutput.validator
def _output_valid(image: str, services: Services) -> Any:
    """LoadImage's check (the file must exist) on the output-folder name; the remote combo lists nothing here."""
    return LoadImage.validate_fn(_as_output(image), services)


@node(category="image", display_name="Webcam Capture", python_module="comfy_extras.nodes_webcam")
def WebcamCapture(
    image: Socket("WEBCAM"),
    width: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    height: Annotated[int, Range(0, _SIDE, step=1)] = 0,
    capture_on_queue: bool = True,
    *,
    ctx: Context,
) -> Image:
    """Loads the webcam frame the editor uploaded (an input-folder name, as LoadImage takes); width and height
    are the editor's capture size."""
    return load_image(annotated_path(ctx.folders, image))[0]


WebcamCapture.fingerprint(LoadImage.fingerprint_fn)
WebcamCapture.validator(LoadImage.validate_fn)


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
