"""ComfyUI's ``comfy.utils``: progress bars, resizing, and reading/writing tensor files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .. import missing, runtime

__getattr__ = missing("comfy.utils")

#: Whether ProgressBar reports (always, here: to the running node).
PROGRESS_BAR_ENABLED = True


class ProgressBar:
    """Reports ``current`` of ``total`` steps to the node being run (the editor's progress bar)."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = int(total)
        self.current = 0
        self._ctx = runtime.exec_ctx()  # the node that made the bar, even if updated from another thread

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        """Set the progress to ``value`` (of ``total`` when given); a ComfyUI preview tuple is passed on."""
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total)
        self._ctx.progress(self.current, self.total, preview)

    def update(self, value: int) -> None:
        """Advance by ``value`` steps."""
        self.update_absolute(self.current + int(value))


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``width`` x ``height`` (ComfyUI's method names; crop ``center``/``disabled``)."""
    from diffusion.resize import upscale

    return upscale(samples, width, height, upscale_method, crop)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resize of ``[B, C, H, W]``."""
    return common_upscale(samples, width, height, "lanczos", "disabled")


def load_torch_file(ckpt: str, safe_load: bool = False, device: Any = None,
                    return_metadata: bool = False) -> Any:
    """A state dict from a ``.safetensors`` or torch pickle file (pickles only with weights_only loading)."""
    device = device or torch.device("cpu")
    metadata = None
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        with safe_open(ckpt, framework="pt", device=str(device)) as f:
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (a safetensors handle, no dict)
            metadata = f.metadata()
    else:
        loaded = torch.load(ckpt, map_location=device, weights_only=True)
        sd = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    return (sd, metadata) if return_metadata else sd


def save_torch_file(sd: Mapping[str, torch.Tensor], ckpt: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``sd`` as safetensors, atomically."""
    from safetensors.torch import save_file

    from diffusion.files import atomic_path

    with atomic_path(ckpt) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata=metadata)


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: Mapping[str, str],
                              filter_keys: bool = False) -> dict[str, Any]:
    """Rename keys starting with each prefix of ``replace_prefix`` (in place unless ``filter_keys``)."""
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


def get_attr(obj: Any, attr: str) -> Any:
    """``obj.a.b.c`` for ``attr="a.b.c"``."""
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    """Set ``obj.a.b.c = value``; returns the previous value."""
    names = attr.split(".")
    for name in names[:-1]:
        obj = getattr(obj, name)
    previous = getattr(obj, names[-1])
    setattr(obj, names[-1], value)
    return previous


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    """How many tiles a tiled pass over ``width`` x ``height`` makes."""
    import math

    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols
