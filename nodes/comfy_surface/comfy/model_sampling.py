"""ComfyUI's ``comfy.model_sampling``: the timestep shift of flow models."""

from __future__ import annotations

from typing import Any

from .. import missing

__getattr__ = missing("comfy.model_sampling")


def time_snr_shift(alpha: float, t: Any) -> Any:
    """Shift timestep ``t`` (0..1) by ``alpha`` (SD3/Flux's ``shift``): ``alpha t / (1 + (alpha - 1) t)``."""
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)
