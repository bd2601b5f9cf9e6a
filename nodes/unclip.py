"""unCLIP: SD2.1 unCLIP checkpoints (MODEL, CLIP, VAE and their CLIP image encoder) and unCLIPConditioning,
which adds a CLIP vision encoding of an image to a conditioning (an unCLIP model's image input, SDXL's
"revision" pooled input). The maths is in ``diffusion.unclip``.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import (
    Clip,
    ClipVision,
    ClipVisionOutput,
    Conditioning,
    Context,
    Model,
    OneOf,
    Output,
    Range,
    Tooltip,
    Vae,
    files_in,
    node,
)
from .loaders import _model_file, cached_checkpoint


@node(category="loaders")
def unCLIPCheckpointLoader(
    ckpt_name: Annotated[str, OneOf(files_in("checkpoints")), Tooltip("An unCLIP checkpoint (SD2.1 unCLIP).")],
    *,
    ctx: Context,
) -> tuple[Annotated[Model, Output("MODEL")], Annotated[Clip, Output("CLIP")], Annotated[Vae, Output("VAE")],
           Annotated[ClipVision, Output("CLIP_VISION")]]:
    """Loads a checkpoint with its CLIP image encoder (None when the file has none, as in ComfyUI)."""
    from diffusion.memory import pick_device
    from diffusion.unclip import load_image_encoder

    path = _model_file(ctx, "checkpoints", ckpt_name, "Checkpoint")
    precision = ctx.services.precision

    def load_vision() -> Any:
        return load_image_encoder(path, precision=precision, device=pick_device())

    loaded = cached_checkpoint(ctx, path)
    vision = ctx.services.model_cache().get(path, ("unclip_clip_vision", precision), load_vision)
    return loaded.unet, loaded.clip, loaded.vae, vision


@node(category="conditioning")
def unCLIPConditioning(
    conditioning: Conditioning,
    clip_vision_output: ClipVisionOutput,
    strength: Annotated[float, Range(-10.0, 10.0, step=0.01)] = 1.0,
    noise_augmentation: Annotated[float, Range(0.0, 1.0, step=0.01),
                                  Tooltip("How much noise the image embedding gets: higher strays further "
                                          "from the image.")] = 0.0,
) -> Conditioning:
    """Adds an image's CLIP vision encoding to the conditioning, for unCLIP models (and SDXL's revision)."""
    from diffusion.unclip import conditioning as unclip_conditioning

    if strength == 0:
        return conditioning
    if clip_vision_output is None or getattr(clip_vision_output, "image_embeds", None) is None:
        raise ValueError("unCLIPConditioning: clip_vision_output has no image embedding (is the checkpoint's "
                         "CLIP_VISION empty? the file has no image encoder)")
    return unclip_conditioning(conditioning, clip_vision_output, strength, noise_augmentation)
