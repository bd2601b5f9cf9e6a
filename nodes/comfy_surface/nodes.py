"""ComfyUI's ``nodes`` module, as packs see it (``import nodes`` inside a pack).

``MAX_RESOLUTION``, ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` (the core
classes of :mod:`.core_classes` that the registry has, plus every pack class loaded so
far, as in ComfyUI), ``EXTENSION_WEB_DIRS``, :func:`common_ksampler`, and the core node
classes themselves (``nodes.KSampler``...), made on first use.
"""

from __future__ import annotations

from typing import Any

from ..latent import MAX_RESOLUTION
from . import core_classes, missing, runtime
from .values import unwrap, wrap

__all__ = ["EXTENSION_WEB_DIRS", "MAX_RESOLUTION", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS",
           "common_ksampler"]

#: Every node class by name: the core classes, then the packs' (filled by :func:`refresh`).
NODE_CLASS_MAPPINGS: dict[str, type] = {}
#: Display names, as ComfyUI's.
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
#: Pack name -> its web directory (``WEB_DIRECTORY``), filled while packs load.
EXTENSION_WEB_DIRS: dict[str, str] = {}

_missing = missing("nodes")


def refresh() -> None:
    """Fill the mappings with the active registry's core classes (pack classes are added as they load)."""
    NODE_CLASS_MAPPINGS.clear()
    NODE_DISPLAY_NAME_MAPPINGS.clear()
    EXTENSION_WEB_DIRS.clear()
    for name, cls in core_classes.available("nodes").items():
        NODE_CLASS_MAPPINGS[name] = cls
        display = runtime.builtin(name).display_name
        if display:
            NODE_DISPLAY_NAME_MAPPINGS[name] = display


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: Any, negative: Any, latent: dict[str, Any], denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
    """ComfyUI's sampling helper: a one-tuple of the sampled LATENT, progress reported to the running node."""
    from diffusion.ksampler import ksample

    ctx = runtime.exec_ctx()

    def callback(step: int, total: int, denoised: Any) -> None:
        ctx.progress(step + 1, total, None)

    out = ksample(unwrap(model), seed, steps, cfg, sampler_name, scheduler, unwrap(positive), unwrap(negative),
                  latent, denoise=denoise, add_noise=not disable_noise, start_step=start_step,
                  last_step=last_step, force_full_denoise=force_full_denoise, callback=callback)
    return (wrap(out),)


def __getattr__(name: str) -> Any:
    """A core node class (``nodes.KSampler``...), or an AttributeError naming ``nodes.<name>``."""
    if name in core_classes.FUNCTIONS["nodes"]:
        return core_classes.core_class("nodes", name)
    return _missing(name)
