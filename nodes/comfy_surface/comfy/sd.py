"""ComfyUI's ``comfy.sd``: loading checkpoints, and the ``CLIP``/``VAE`` value classes."""

from __future__ import annotations

from typing import Any

from .. import missing
from ..values import CLIP, VAE, wrap

__all__ = ["CLIP", "VAE", "load_checkpoint_guess_config"]
__getattr__ = missing("comfy.sd")


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, **kwargs: Any) -> tuple[Any, Any, Any, None]:
    """``(model, clip, vae, clipvision)`` of a single-file checkpoint; parts not asked for are None."""
    from diffusion.checkpoint import load_checkpoint

    parts = [p for p, wanted in (("unet", output_model), ("clip", output_clip), ("vae", output_vae)) if wanted]
    loaded = load_checkpoint(ckpt_path, parts=parts)
    return (wrap(loaded.unet) if loaded.unet is not None else None,
            wrap(loaded.clip) if loaded.clip is not None else None,
            wrap(loaded.vae) if loaded.vae is not None else None, None)

