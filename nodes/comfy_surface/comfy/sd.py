"""ComfyUI's ``comfy.sd``: loading checkpoints and LoRA state dicts, and the ``CLIP``/``VAE`` value classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import missing
from ..values import CLIP, VAE, unwrap, wrap

__all__ = ["CLIP", "VAE", "load_checkpoint_guess_config", "load_lora_for_models"]
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



def load_lora_for_models(model: Any, clip: Any, lora: Mapping[str, Any], strength_model: float,
                         strength_clip: float) -> tuple[Any, Any]:
    """``(model, clip)`` clones with a LoRA state dict (any key layout ``read_lora`` knows) added as patches.

    The state dict is parsed by noodlebox's LoRA reader, through a temporary file; a zero
    strength leaves that part as given. Raises for a dict that holds no LoRA.
    """
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from diffusion.lora.load import lora_patches, read_lora

    base_model, base_clip = unwrap(model), unwrap(clip)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "lora.safetensors"
        save_file({k: v.contiguous() for k, v in lora.items()}, str(path))
        parsed = read_lora(path)
    placed = lora_patches(parsed, base_model if strength_model else None, base_clip if strength_clip else None)
    new_model = base_model.with_patches(placed.unet, strength_model) if base_model is not None and strength_model \
        else base_model
    new_clip = base_clip.with_patches(placed.clip, strength_clip) if base_clip is not None and strength_clip \
        else base_clip
    return wrap(new_model), wrap(new_clip)
