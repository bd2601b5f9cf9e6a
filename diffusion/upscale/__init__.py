"""Image upscale models (ESRGAN and kin): reading them by their weights, and running them in tiles.

:func:`load_upscale_model` reads a ``.pth``/``.safetensors`` file and tells the
architecture from its keys and shapes: ESRGAN's RRDBNet in the original and in BasicSR's
key layout (Real-ESRGAN x4plus/x2plus too) and Real-ESRGAN's compact SRVGGNet are built
here (:mod:`.rrdb`, :mod:`.compact`). Anything else goes to spandrel where spandrel
imports; here it does not (its package import needs torchvision, FINDINGS.md), so such a
file gets a one-line reason instead. :func:`upscale_image` is ComfyUI's
ImageUpscaleWithModel: 512-pixel tiles with a 32-pixel overlap, halving the tile when
memory runs out, down to 128.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import compact, rrdb

#: Tile size and overlap of ImageUpscaleWithModel, in input pixels; tiles never get smaller than MIN_TILE.
TILE = 512
OVERLAP = 32
MIN_TILE = 128
#: Wrappers that training code puts around a state dict.
_WRAPPERS = ("params_ema", "params", "model", "state_dict", "net", "generator")


class UpscaleModelError(ValueError):
    """A file that is not an upscale model this runtime can read."""


@dataclass
class UpscaleModel:
    """A loaded single-image upscaler: the module (eval mode), its scale and what it is.

    ``forward`` runs it where the module alone is not enough (spandrel's descriptors pad
    inputs to the sizes their architecture needs); it uses ``model``'s device.
    """

    model: nn.Module
    scale: float
    arch: str
    in_channels: int = 3
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` in 0..1 -> the upscaled batch (not clamped), float32 on ``image``'s device."""
        param = next(self.model.parameters(), None)
        run = self.forward or self.model
        with torch.no_grad():
            if param is None:
                return run(image).float()
            return run(image.to(param.device, param.dtype)).float().to(image.device)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or pickled (weights only) file, unwrapped from ``params_ema`` & co."""
    path = Path(path)
    try:
        if path.suffix in (".safetensors", ".sft"):
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UpscaleModelError(f"{path.name} is not a readable model file ({str(exc).splitlines()[0]})") from exc
    for _ in range(2):
        if isinstance(state, Mapping):
            inner = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), Mapping)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = inner
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UpscaleModelError(f"{path.name} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def model_from_state(state: Mapping[str, torch.Tensor], name: str = "the model") -> UpscaleModel:
    """Build the upscaler that ``state`` is the weights of (see the module docstring)."""
    try:
        if rrdb.is_new_layout(state) or rrdb.is_old_layout(state):
            old = rrdb.from_new_layout(state) if rrdb.is_new_layout(state) else dict(state)
            config = rrdb.config_from_state(old)
            module: nn.Module = rrdb.RRDBNet(config)
            module.load_state_dict(old, strict=True)
            arch = "ESRGAN" if rrdb.is_old_layout(state) else "RealESRGAN"
            return UpscaleModel(module.eval(), config.scale, arch, config.in_channels)
        if compact.is_compact(state):
            cconfig = compact.config_from_state(state)
            module = compact.SRVGGNetCompact(cconfig)
            module.load_state_dict(dict(state), strict=True)
            return UpscaleModel(module.eval(), float(cconfig.scale), "RealESRGAN-compact", cconfig.in_channels)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UpscaleModelError(f"{name} looks like an ESRGAN-family model but does not load: "
                                f"{str(exc).splitlines()[0]}") from exc
    return _spandrel_model(state, name)


def _spandrel_model(state: Mapping[str, torch.Tensor], name: str) -> UpscaleModel:
    """Other architectures (SwinIR, HAT, DAT, OmniSR...) through spandrel, when it imports."""
    try:
        import spandrel
    except Exception as exc:  # not installed, or its torchvision import fails (FINDINGS.md)
        raise UpscaleModelError(
            f"{name} is not an ESRGAN, Real-ESRGAN or compact model, and other architectures need spandrel, "
            f"which does not import here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except Exception as exc:
        raise UpscaleModelError(f"{name}: spandrel does not recognise it ({str(exc).splitlines()[0]})") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError("Upscale model must be a single-image model.")
    descriptor.eval()
    return UpscaleModel(descriptor.model, float(descriptor.scale), str(descriptor.architecture.name),
                        int(descriptor.input_channels), forward=descriptor)


def load_upscale_model(path: str | os.PathLike[str]) -> UpscaleModel:
    """Read an upscale model file (raises :class:`UpscaleModelError` with a one-line reason)."""
    return model_from_state(read_state_dict(path), Path(path).name)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def upscale_image(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: float,
                  tile: int = TILE, overlap: int = OVERLAP,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """An IMAGE ``[B, H, W, C]`` upscaled by ``model`` in overlapping tiles, clamped to 0..1.

    When a tile runs out of memory the whole image is redone with tiles half the size;
    below :data:`MIN_TILE` the error is raised. ``progress(done, total)`` is called per tile.
    """
    from diffusion.vae import tiled_apply

    pixels = image.movedim(-1, 1).float()
    if pixels.shape[1] == 0 or pixels.shape[2] == 0 or pixels.shape[3] == 0:
        raise UpscaleModelError(f"cannot upscale an empty image of shape {tuple(image.shape)}")
    channels = pixels.shape[1]
    while True:
        total = pixels.shape[0] * tile_count(pixels.shape[2], pixels.shape[3], tile, overlap)
        try:
            result = tiled_apply(pixels, _counted(model, total, progress), (tile, tile), overlap, scale, channels)
            break
        except Exception as exc:
            if not _is_out_of_memory(exc) or tile // 2 < MIN_TILE:
                raise
            tile //= 2
    return result.clamp(0, 1).movedim(1, -1)


def _counted(model: Callable[[torch.Tensor], torch.Tensor], total: int,
             progress: Callable[[int, int], None] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` reporting ``progress(done, total)`` after each tile."""
    done = 0

    def run(part: torch.Tensor) -> torch.Tensor:
        nonlocal done
        out = model(part)
        done += 1
        if progress is not None:
            progress(min(done, total), total)
        return out

    return run


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`upscale_image` runs for one image of this size."""
    if height <= tile and width <= tile:
        return 1

    def along(size: int) -> int:
        return 1 if size <= tile else len(range(0, size - overlap, max(1, tile - overlap)))

    return along(height) * along(width)


__all__ = ["MIN_TILE", "OVERLAP", "TILE", "UpscaleModel", "UpscaleModelError", "load_upscale_model",
           "model_from_state", "read_state_dict", "tile_count", "upscale_image"]
