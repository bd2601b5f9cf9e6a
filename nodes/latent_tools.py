"""Latent tools: compositing, arithmetic, batching, transforms, latent operations, ``.latent`` files, inpaint encode.

Names, inputs, defaults and categories are those of ComfyUI's ``nodes.py`` and
``comfy_extras`` (``nodes_latent``, ``nodes_mask``, ``nodes_rebatch``). Pixel inputs
(x, y, width, feather) are divided by 8 into latent pixels, as ComfyUI does. Every node
returns a new LATENT dict (other keys, such as ``noise_mask``, are carried over from
the first input) and never changes its inputs.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch

from .api import (
    Context,
    ExtraPngInfo,
    HiddenPrompt,
    Image,
    Latent,
    Mask,
    Model,
    OneOf,
    Range,
    Result,
    ServiceChoices,
    Services,
    Socket,
    Tooltip,
    Vae,
    node,
)
from .folders import UnsafePathError, sha256_of
from .image import annotated_path
from .latent import MAX_RESOLUTION
from .save_paths import save_target
from .vae import _vae

LatentOperation = Socket("LATENT_OPERATION")

_NODES_LATENT = "comfy_extras.nodes_latent"
_XY = Annotated[int, Range(0, MAX_RESOLUTION, step=8)]


def _ops() -> Any:
    """``diffusion.latent_ops``, imported on first use: it pulls in the sampler's modules (and diffusers)."""
    from diffusion import latent_ops

    return latent_ops


def _with(samples: dict[str, Any], tensor: torch.Tensor) -> dict[str, Any]:
    """A copy of a LATENT dict with new samples."""
    return {**samples, "samples": tensor}


# -- compositing ------------------------------------------------------------------------------------


@node(category="latent", display_name="Latent Composite")
def LatentComposite(
    samples_to: Latent,
    samples_from: Latent,
    x: _XY = 0,
    y: _XY = 0,
    feather: _XY = 0,
) -> Latent:
    """Pastes samples_from into samples_to at (x, y) pixels; feather fades the pasted edges over that many pixels."""
    out = _ops().composite(samples_to["samples"], samples_from["samples"], x // 8, y // 8, feather // 8)
    return _with(samples_to, out)


@node(category="latent", display_name="LatentCompositeMasked", python_module="comfy_extras.nodes_mask")
def LatentCompositeMasked(
    destination: Latent,
    source: Latent,
    x: _XY = 0,
    y: _XY = 0,
    resize_source: bool = False,
    mask: Mask | None = None,
) -> Latent:
    """Blends source into destination at (x, y) pixels through the mask (all of source without one)."""
    out = _ops().composite_masked(destination["samples"], source["samples"], x, y, mask, 8, resize_source)
    return _with(destination, out)


# -- arithmetic -------------------------------------------------------------------------------------


@node(category="latent/advanced", python_module=_NODES_LATENT)
def LatentAdd(samples1: Latent, samples2: Latent) -> Latent:
    """Adds two latents (the second resized and repeated to the first's shape)."""
    a = samples1["samples"]
    return _with(samples1, a + _ops().reshape_to(a, samples2["samples"]))


@node(category="latent/advanced", python_module=_NODES_LATENT)
def LatentSubtract(samples1: Latent, samples2: Latent) -> Latent:
    """Subtracts the second latent from the first (the second resized and repeated to the first's shape)."""
    a = samples1["samples"]
    return _with(samples1, a - _ops().reshape_to(a, samples2["samples"]))


@node(category="latent/advanced", python_module=_NODES_LATENT)
def LatentMultiply(
    samples: Latent,
    multiplier: Annotated[float, Range(-10.0, 10.0, step=0.01)] = 1.0,
) -> Latent:
    """Multiplies a latent by a number."""
    return _with(samples, samples["samples"] * multiplier)


@node(category="latent/advanced", python_module=_NODES_LATENT)
def LatentInterpolate(
    samples1: Latent,
    samples2: Latent,
    ratio: Annotated[float, Range(0.0, 1.0, step=0.01)] = 1.0,
) -> Latent:
    """Interpolates two latents (ratio 1 is the first), mixing each pixel's direction and length separately."""
    return _with(samples1, _ops().interpolate(samples1["samples"], samples2["samples"], ratio))


@node(category="_for_testing", display_name="Latent Blend")
def LatentBlend(
    samples1: Latent,
    samples2: Latent,
    blend_factor: Annotated[float, Range(0, 1, step=0.01)] = 0.5,
) -> Latent:
    """Mixes two latents: blend_factor of the first plus the rest of the second."""
    return _with(samples1, _ops().blend(samples1["samples"], samples2["samples"], blend_factor))


# -- batches ----------------------------------------------------------------------------------------


@node(category="latent/advanced", python_module=_NODES_LATENT)
def LatentBatchSeedBehavior(
    samples: Latent,
    seed_behavior: Annotated[str, OneOf(("random", "fixed"), v3=True)] = "fixed",
) -> Latent:
    """"fixed" gives every latent of the batch the same noise (the first one's); "random" lets each have its own."""
    out = dict(samples)
    if seed_behavior == "random":
        out.pop("batch_index", None)
    else:
        first = next(iter(samples.get("batch_index", [0])))
        out["batch_index"] = [first] * samples["samples"].shape[0]
    return out


@node(category="latent/batch", python_module=_NODES_LATENT)
def LatentBatch(samples1: Latent, samples2: Latent) -> Latent:
    """Joins two latent batches into one (the second resized to the first's size); each keeps its noise."""
    a = samples1["samples"]
    b = _ops().reshape_to(a, samples2["samples"], repeat_batch=False)
    indices = list(samples1.get("batch_index", range(a.shape[0]))) + list(samples2.get("batch_index",
                                                                                        range(b.shape[0])))
    return {**samples1, "samples": torch.cat((a, b)), "batch_index": indices}


@node(category="latent/batch", display_name="Rebatch Latents", input_is_list=True,
      python_module="comfy_extras.nodes_rebatch")
def RebatchLatents(
    latents: Latent,
    batch_size: Annotated[int, Range(1, 4096)] = 1,
) -> list[Latent]:
    """Regroups a list of latent batches into batches of batch_size (a change of size starts a new batch)."""
    size = batch_size[0] if isinstance(batch_size, list) else batch_size
    return _ops().rebatch(latents, int(size))


# -- transforms -------------------------------------------------------------------------------------


@node(category="latent/transform", display_name="Crop Latent")
def LatentCrop(
    samples: Latent,
    width: Annotated[int, Range(64, MAX_RESOLUTION, step=8)] = 512,
    height: Annotated[int, Range(64, MAX_RESOLUTION, step=8)] = 512,
    x: _XY = 0,
    y: _XY = 0,
) -> Latent:
    """Cuts a width x height pixel window at (x, y) out of the latents (the corner is kept 64 pixels inside)."""
    latent = samples["samples"]
    x = min(x // 8, latent.shape[3] - 8)
    y = min(y // 8, latent.shape[2] - 8)
    x, y = max(0, x), max(0, y)
    return _with(samples, latent[:, :, y:y + height // 8, x:x + width // 8])


FLIP_METHODS = ("x-axis: vertically", "y-axis: horizontally")
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")


@node(category="latent/transform", display_name="Flip Latent")
def LatentFlip(samples: Latent, flip_method: Annotated[str, OneOf(FLIP_METHODS)]) -> Latent:
    """Flips latents upside down (x-axis) or left to right (y-axis)."""
    dim = 2 if flip_method.startswith("x") else 3
    return _with(samples, torch.flip(samples["samples"], dims=[dim]))


@node(category="latent/transform", display_name="Rotate Latent")
def LatentRotate(samples: Latent, rotation: Annotated[str, OneOf(ROTATIONS)]) -> Latent:
    """Rotates latents clockwise by a quarter turn, a half or three quarters."""
    turns = ROTATIONS.index(rotation)
    if turns == 0:
        return dict(samples)
    # rot90 from dim 3 (width) towards dim 2 (height) is a clockwise quarter turn of the image.
    return _with(samples, torch.rot90(samples["samples"], k=turns, dims=[3, 2]))


# -- latent operations ------------------------------------------------------------------------------


@node(category="latent/advanced/operations", experimental=True, python_module=_NODES_LATENT)
def LatentApplyOperation(samples: Latent, operation: LatentOperation) -> Latent:
    """Applies a latent operation (sharpen, tonemap...) to the latents."""
    return _with(samples, operation(latent=samples["samples"]))


@node(category="latent/advanced/operations", experimental=True, python_module=_NODES_LATENT)
def LatentApplyOperationCFG(model: Model, operation: LatentOperation) -> Model:
    """A model that applies a latent operation to the guidance (positive minus negative) at every step."""
    from diffusion.patching import append_model_option

    patched = model.clone()
    append_model_option(patched.options, "sampler_pre_cfg_function", _ops().cfg_pre_function(operation))
    return patched


@node(category="latent/advanced/operations", experimental=True, python_module=_NODES_LATENT)
def LatentOperationSharpen(
    sharpen_radius: Annotated[int, Range(1, 31, step=1)] = 9,
    sigma: Annotated[float, Range(0.1, 10.0, step=0.1)] = 1.0,
    alpha: Annotated[float, Range(0.0, 5.0, step=0.01)] = 0.1,
) -> LatentOperation:
    """An operation that sharpens latents (unsharp mask of a Gaussian of this radius and sigma, by alpha)."""
    return _ops().sharpen_operation(sharpen_radius, sigma, alpha)


@node(category="latent/advanced/operations", experimental=True, python_module=_NODES_LATENT)
def LatentOperationTonemapReinhard(
    multiplier: Annotated[float, Range(0.0, 100.0, step=0.01)] = 1.0,
) -> LatentOperation:
    """An operation that compresses strong latent values (Reinhard tone mapping; multiplier sets the white point)."""
    return _ops().tonemap_reinhard_operation(multiplier)


# -- .latent files ----------------------------------------------------------------------------------


@node(category="_for_testing", display_name="SaveLatent", output_node=True)
def SaveLatent(
    samples: Latent,
    filename_prefix: str = "latents/ComfyUI",
    prompt: HiddenPrompt = None,
    extra_pnginfo: ExtraPngInfo = None,
    *,
    ctx: Context,
) -> Result:
    """Saves latents as a .latent file (safetensors) in the output folder, with the prompt and workflow."""
    target = save_target(ctx.folders.output_dir, filename_prefix, 0, 0)
    name = f"{target.filename}_{target.counter:05}_.latent"
    ops = _ops()
    ops.save_latent_file(target.folder / name, samples["samples"], ops.latent_file_metadata(prompt, extra_pnginfo))
    return Result(ui={"latents": [{"filename": name, "subfolder": target.subfolder, "type": "output"}]})


def _latent_files(services: Services) -> list[str]:
    """The ``.latent`` files at the top of the input folder."""
    return [name for name in services.folders.input_files(()) if name.endswith(".latent")]


@node(category="_for_testing", display_name="LoadLatent")
def LoadLatent(latent: Annotated[str, OneOf(ServiceChoices(_latent_files))], *, ctx: Context) -> Latent:
    """Loads a .latent file from the input folder (old files, saved scaled, are unscaled)."""
    return {"samples": _ops().load_latent_file(annotated_path(ctx.folders, latent))}


@LoadLatent.fingerprint
def _latent_changed(latent: str, services: Services) -> str:
    """The file's SHA-256: a replaced file under the same name loads again."""
    return sha256_of(annotated_path(services.folders, latent))


@LoadLatent.validator
def _latent_valid(latent: str, services: Services) -> bool | str:
    """The named file must exist."""
    try:
        exists = annotated_path(services.folders, latent).is_file()
    except UnsafePathError:
        exists = False
    return True if exists else f"Invalid latent file: {latent}"


# -- inpainting -------------------------------------------------------------------------------------


@node(category="latent/inpaint", display_name="VAE Encode (for Inpainting)")
def VAEEncodeForInpaint(
    pixels: Image,
    vae: Vae,
    mask: Mask,
    grow_mask_by: Annotated[int, Range(0, 64, step=1), Tooltip("Pixels to grow the mask by before encoding.")] = 6,
) -> Latent:
    """Encodes an image for inpainting: masked pixels become grey first, the grown mask is the noise mask."""
    from diffusion import vae as vae_ops

    pixels, noise_mask = _ops().inpaint_inputs(pixels, mask, grow_mask_by)
    return {"samples": vae_ops.encode(_vae(vae), pixels), "noise_mask": noise_mask}
