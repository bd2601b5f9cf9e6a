"""ComfyUI's ``node_helpers``: conditioning edits, safe Pillow opening, and string-to-bool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import missing

__getattr__ = missing("node_helpers")


def conditioning_set_values(conditioning: list[list[Any]], values: Mapping[str, Any] | None = None,
                            append: bool = False) -> list[list[Any]]:
    """A copy of ``conditioning`` with ``values`` set in every entry's options (appended to lists with ``append``)."""
    from diffusion import conditioning as cond_ops

    if not append:
        return cond_ops.set_values(conditioning, dict(values or {}))
    out = []
    for entry in conditioning:
        options = dict(entry[1])
        for key, value in (values or {}).items():
            options[key] = (list(options[key]) + list(value)) if key in options else value
        out.append([entry[0], options])
    return out


def pillow(fn: Callable[..., Any], arg: Any) -> Any:
    """Call a Pillow function, retrying once with truncated images allowed (as ComfyUI does)."""
    from PIL import ImageFile

    try:
        return fn(arg)
    except (OSError, UnicodeDecodeError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def string_to_torch_dtype(string: str) -> Any:
    """``"fp16"``/``"bf16"``/``"fp32"`` as a torch dtype."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[string]


def image_alpha_fix(destination: Any, source: Any) -> tuple[Any, Any]:
    """Make the channel counts of two images match (adding an opaque alpha where missing)."""
    import torch

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        source = torch.nn.functional.pad(source, (0, 1), value=1.0)
    return destination, source
