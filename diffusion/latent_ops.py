"""Arithmetic on LATENT samples: compositing, blending, batching, latent operations, ``.latent`` files.

Samples are ``[B, C, H, W]`` tensors (unscaled VAE latents). Every function returns new
tensors and leaves its inputs alone: they may be cached values other nodes still use.
The behaviour follows ComfyUI's latent nodes (``nodes.py``, ``comfy_extras/nodes_latent.py``,
``nodes_mask.py``, ``nodes_rebatch.py``); where ComfyUI would fail with a shape error
deep in torch, these raise :class:`LatentShapeError` with a one-line reason.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.denoiser import repeat_to_batch
from diffusion.files import atomic_path
from diffusion.resize import upscale

#: A latent operation (LatentOperationSharpen, ...): ``op(latent=tensor) -> tensor``.
LatentOperation = Callable[..., torch.Tensor]
#: Scale of SD1 latents: files without the version key hold latents multiplied by it.
LEGACY_LATENT_SCALE = 0.18215
#: The key whose presence marks an unscaled ``.latent`` file (every file ComfyUI writes today).
VERSION_KEY = "latent_format_version_0"
TENSOR_KEY = "latent_tensor"


class LatentShapeError(ValueError):
    """Two latents or masks that cannot be combined (batch or channel counts differ)."""


class LatentFileError(ValueError):
    """A file that is not a readable ``.latent`` file."""


def reshape_to(target: torch.Tensor, latent: torch.Tensor, repeat_batch: bool = True) -> torch.Tensor:
    """``latent`` resized (bilinear, centre crop) to ``target``'s size and, optionally, repeated to its batch."""
    if latent.shape[1] != target.shape[1]:
        raise LatentShapeError(f"latents with {target.shape[1]} and {latent.shape[1]} channels cannot be combined")
    if latent.shape[2:] != target.shape[2:]:
        latent = upscale(latent, target.shape[-1], target.shape[-2], "bilinear", "center")
    return repeat_to_batch(latent, target.shape[0]) if repeat_batch else latent


def _check_batch(what: str, have: int, want: int) -> None:
    if have not in (1, want):
        raise LatentShapeError(f"{what} has a batch of {have}, which does not fit a batch of {want}")


def composite(dest: torch.Tensor, source: torch.Tensor, x: int, y: int, feather: int = 0) -> torch.Tensor:
    """``source`` pasted into ``dest`` with its top-left corner at latent pixel (x, y) (LatentComposite).

    What falls outside ``dest`` is dropped. ``feather`` (latent pixels) fades the pasted
    edges that lie inside ``dest`` linearly, so the seam blends.
    """
    _check_batch("the pasted latent", source.shape[0], dest.shape[0])
    if source.shape[1] != dest.shape[1]:
        raise LatentShapeError(f"latents with {dest.shape[1]} and {source.shape[1]} channels cannot be composited")
    out = dest.clone()
    if x >= dest.shape[3] or y >= dest.shape[2]:
        return out
    part = source[:, :, :dest.shape[2] - y, :dest.shape[3] - x].to(dest)
    h, w = part.shape[2], part.shape[3]
    region = out[:, :, y:y + h, x:x + w]
    if feather == 0:
        region[...] = part
        return out
    mask = torch.ones_like(part)
    for t in range(feather):
        ramp = (t + 1) / feather
        if y != 0:
            mask[:, :, t:t + 1, :] *= ramp
        if y + h < dest.shape[2]:
            mask[:, :, h - 1 - t:h - t, :] *= ramp
        if x != 0:
            mask[:, :, :, t:t + 1] *= ramp
        if x + w < dest.shape[3]:
            mask[:, :, :, w - 1 - t:w - t] *= ramp
    region[...] = part * mask + region * (1.0 - mask)
    return out


def composite_masked(dest: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
                     multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """``source`` blended into ``dest`` through ``mask`` at (x, y) >= 0, in units of 1/``multiplier`` pixel.

    ComfyUI's ``composite`` of LatentCompositeMasked (multiplier 8) and ImageCompositeMasked
    (multiplier 1): the source is repeated to the destination's batch, the mask resized
    (bilinear) to the source; the part outside the destination is dropped.
    """
    if source.shape[1] != dest.shape[1]:
        raise LatentShapeError(f"{dest.shape[1]} and {source.shape[1]} channels cannot be composited")
    source = source.to(dest)
    if resize_source:
        source = F.interpolate(source, size=(dest.shape[2], dest.shape[3]), mode="bilinear")
    source = repeat_to_batch(source, dest.shape[0])
    x = max(-source.shape[3] * multiplier, min(x, dest.shape[3] * multiplier))
    y = max(-source.shape[2] * multiplier, min(y, dest.shape[2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[3], top + source.shape[2]
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(dest).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        mask = F.interpolate(mask, size=(source.shape[2], source.shape[3]), mode="bilinear")
        mask = repeat_to_batch(mask, source.shape[0])
    visible_w = dest.shape[3] - left + min(0, x)
    visible_h = dest.shape[2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    out = dest.clone()
    region = out[:, :, top:bottom, left:right]
    if region.numel() == 0:
        return out
    region[...] = mask * source[:, :, :visible_h, :visible_w] + (1.0 - mask) * region
    return out


def interpolate(a: torch.Tensor, b: torch.Tensor, ratio: float) -> torch.Tensor:
    """LatentInterpolate: directions (per-pixel unit vectors over channels) and lengths mixed separately.

    ``b`` is first resized and repeated to ``a``'s shape. Norms are taken per latent pixel
    (ComfyUI's own code gets this right for a batch of 1 only).
    """
    b = reshape_to(a, b)
    norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True)
    norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True)
    mixed = torch.nan_to_num(a / norm_a) * ratio + torch.nan_to_num(b / norm_b) * (1.0 - ratio)
    direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
    return direction * (norm_a * ratio + norm_b * (1.0 - ratio))


def blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    """LatentBlend's normal mode: ``a * factor + b * (1 - factor)``, ``b`` resized (bicubic, centre crop) first."""
    if a.shape != b.shape:
        if a.shape[1] != b.shape[1]:
            raise LatentShapeError(f"latents with {a.shape[1]} and {b.shape[1]} channels cannot be blended")
        b = upscale(b, a.shape[3], a.shape[2], "bicubic", "center")
        _check_batch("the second latent", b.shape[0], a.shape[0])
    return a * factor + b * (1.0 - factor)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A normalised ``size x size`` Gaussian on a -1..1 grid (ComfyUI's post-processing kernel)."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def sharpen_operation(radius: int, sigma: float, alpha: float) -> LatentOperation:
    """LatentOperationSharpen: unsharp masking of each pixel's channel direction; lengths are kept."""

    def sharpen(latent: torch.Tensor, **_: Any) -> torch.Tensor:
        luminance = torch.linalg.vector_norm(latent, dim=1, keepdim=True) + 1e-6
        direction = latent / luminance
        size = radius * 2 + 1
        kernel = gaussian_kernel(size, sigma).to(latent) * (alpha * -10)
        kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
        channels = latent.shape[1]
        padded = F.pad(direction, (radius, radius, radius, radius), mode="reflect")
        sharpened = F.conv2d(padded, kernel.repeat(channels, 1, 1).unsqueeze(1), groups=channels)
        return luminance * sharpened

    return sharpen


def tonemap_reinhard_operation(multiplier: float) -> LatentOperation:
    """LatentOperationTonemapReinhard: per-pixel lengths compressed with Reinhard's ``l / (l + 1)``.

    Lengths are scaled so that ``(mean + 5 std) * multiplier`` of the latent maps to 1 first.
    """

    def tonemap(latent: torch.Tensor, **_: Any) -> torch.Tensor:
        magnitude = torch.linalg.vector_norm(latent, dim=1, keepdim=True) + 1e-10
        direction = latent / magnitude
        mean = magnitude.mean(dim=(1, 2, 3), keepdim=True)
        std = magnitude.std(dim=(1, 2, 3), keepdim=True)
        top = (std * 5 + mean) * multiplier
        scaled = magnitude / top
        return direction * (scaled / (scaled + 1.0) * top)

    return tonemap


def cfg_pre_function(operation: LatentOperation) -> Callable[[Mapping[str, Any]], list[torch.Tensor]]:
    """A ``sampler_pre_cfg_function`` that applies ``operation`` to the guidance (cond - uncond) each step.

    With only the positive prediction, the operation applies to it directly (ComfyUI's
    LatentApplyOperationCFG).
    """

    def pre_cfg(args: Mapping[str, Any]) -> list[torch.Tensor]:
        outputs = list(args["conds_out"])
        if len(outputs) == 2:
            outputs[0] = operation(latent=outputs[0] - outputs[1]) + outputs[1]
        else:
            outputs[0] = operation(latent=outputs[0])
        return outputs

    return pre_cfg


# -- rebatching -------------------------------------------------------------------------------------


def rebatch(latents: Sequence[Mapping[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """RebatchLatents: a list of LATENTs regrouped into batches of ``batch_size`` (the last may be smaller).

    Consecutive latents of the same size are joined and cut; a size change starts a new
    batch. Noise masks go along at pixel size (all-ones where a latent had none, dropped
    again from a batch that is all ones); ``batch_index`` is kept, or counted over the list.
    """
    out: list[dict[str, Any]] = []
    run: list[tuple[torch.Tensor, torch.Tensor, list[int]]] = []
    counted = 0

    def flush() -> None:
        if not run:
            return
        samples = torch.cat([r[0] for r in run])
        masks = torch.cat([r[1] for r in run])
        indices = [i for r in run for i in r[2]]
        for start in range(0, samples.shape[0], batch_size):
            entry: dict[str, Any] = {"samples": samples[start:start + batch_size],
                                     "batch_index": indices[start:start + batch_size]}
            mask = masks[start:start + batch_size]
            if mask.mean() != 1.0:
                entry["noise_mask"] = mask
            out.append(entry)
        run.clear()

    for latent in latents:
        samples = latent["samples"]
        batch, _, height, width = samples.shape
        mask = latent.get("noise_mask")
        if mask is None:
            mask = torch.ones((batch, 1, height * 8, width * 8))
        mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
        if mask.shape[-2:] != (height * 8, width * 8):
            mask = F.interpolate(mask, size=(height * 8, width * 8), mode="bilinear")
        mask = repeat_to_batch(mask, batch)
        indices = list(latent.get("batch_index", range(counted, counted + batch)))
        counted += len(indices)
        if run and run[-1][0].shape[1:] != samples.shape[1:]:
            flush()
        run.append((samples, mask, indices))
    flush()
    return out


# -- .latent files ----------------------------------------------------------------------------------


def save_latent_file(path: str | os.PathLike[str], samples: torch.Tensor,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ComfyUI's ``.latent`` file (safetensors: the samples and the version key), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {TENSOR_KEY: samples.detach().cpu().contiguous(), VERSION_KEY: torch.tensor([])}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata) if metadata else None)
    return path


def load_latent_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """The float32 samples of a ``.latent`` file; files without the version key are unscaled from SD1's scale.

    Raises :class:`LatentFileError` for a file that is not safetensors or has no latent in it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LatentFileError(f"{path.name} is not a .latent file ({str(exc).splitlines()[0]})") from exc
    if TENSOR_KEY not in tensors or tensors[TENSOR_KEY].ndim < 3:
        raise LatentFileError(f"{path.name} is not a .latent file (it holds no {TENSOR_KEY!r})")
    multiplier = 1.0 if VERSION_KEY in tensors else 1.0 / LEGACY_LATENT_SCALE
    return tensors[TENSOR_KEY].float() * multiplier


def latent_file_metadata(prompt: Any, extra_pnginfo: Mapping[str, Any] | None) -> dict[str, str]:
    """SaveLatent's safetensors metadata: the prompt and each extra_pnginfo entry, as JSON strings."""
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    return metadata


# -- inpainting -------------------------------------------------------------------------------------


def inpaint_inputs(pixels: torch.Tensor, mask: torch.Tensor, grow_by: int,
                   multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """VAEEncodeForInpaint's preparation: (pixels to encode, noise mask) from an IMAGE and a MASK.

    The mask is resized (bilinear) to the image; both are cropped, centred, to multiples of
    ``multiple``; masked pixels (mask >= 0.5) become grey 0.5; the noise mask is the rounded
    mask grown by ``grow_by`` pixels (a box filter), at pixel size ``[B, 1, H, W]``.
    """
    if mask.ndim < 2 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise LatentShapeError(f"the mask has shape {tuple(mask.shape)}; expected [B, H, W]")
    height, width = pixels.shape[1], pixels.shape[2]
    if height < multiple or width < multiple:
        raise LatentShapeError(f"the image is {width}x{height}; it needs at least {multiple}x{multiple} pixels")
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
    _check_batch("the mask", mask.shape[0], pixels.shape[0])
    mask = F.interpolate(mask, size=(height, width), mode="bilinear")
    kept_h, kept_w = (height // multiple) * multiple, (width // multiple) * multiple
    top, left = (height % multiple) // 2, (width % multiple) // 2
    pixels = pixels[:, top:top + kept_h, left:left + kept_w, :].clone()
    mask = mask[:, :, top:top + kept_h, left:left + kept_w]
    rounded = mask.round()
    if grow_by == 0:
        grown = mask
    else:
        kernel = torch.ones((1, 1, grow_by, grow_by))
        grown = torch.clamp(F.conv2d(rounded, kernel, padding=math.ceil((grow_by - 1) / 2)), 0, 1)
    keep = (1.0 - rounded).squeeze(1)
    for channel in range(min(3, pixels.shape[-1])):
        pixels[:, :, :, channel] = (pixels[:, :, :, channel] - 0.5) * keep + 0.5
    return pixels, grown[:, :, :kept_h, :kept_w].round()
