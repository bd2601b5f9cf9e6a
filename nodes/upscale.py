"""Upscale-model nodes: loading an ESRGAN-family upscaler and running it on images in tiles.

Names, inputs and categories are ComfyUI's (``comfy_extras/nodes_upscale_model.py``). The
architectures come from ``diffusion.upscale``: ESRGAN (original and BasicSR layouts,
Real-ESRGAN included) and Real-ESRGAN's compact model built in, others through spandrel
where it imports.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Context, Image, OneOf, UpscaleModel, files_in, node
from .loaders import _model_file

_MODULE = "comfy_extras.nodes_upscale_model"


@node(category="loaders", display_name="Load Upscale Model", python_module=_MODULE)
def UpscaleModelLoader(
    model_name: Annotated[str, OneOf(files_in("upscale_models"), v3=True)],
    *,
    ctx: Context,
) -> UpscaleModel:
    """Loads an image upscale model (ESRGAN, Real-ESRGAN, ...) from the upscale_models folder."""
    from diffusion.upscale import load_upscale_model

    path = _model_file(ctx, "upscale_models", model_name, "Upscale model")
    return ctx.services.model_cache().get(path, ("upscale",), lambda: load_upscale_model(path))


@node(category="image/upscaling", display_name="Upscale Image (using Model)", python_module=_MODULE)
def ImageUpscaleWithModel(upscale_model: UpscaleModel, image: Image, *, ctx: Context) -> Image:
    """Upscales images with the model, in overlapping tiles that shrink when memory runs short."""
    from diffusion.memory import pick_device
    from diffusion.upscale import upscale_image

    model: Any = upscale_model
    if image.shape[-1] != model.in_channels:
        raise ValueError(f"the image has {image.shape[-1]} channels; this {model.arch} upscaler takes "
                         f"{model.in_channels}")
    device = pick_device()
    model.model.to(device)
    try:
        return upscale_image(model, image.to(device), model.scale, progress=ctx.progress).cpu()
    finally:
        model.model.to("cpu")
