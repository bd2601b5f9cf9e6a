"""CLIP vision nodes: loading an image encoder (CLIP_VISION) and encoding images (CLIP_VISION_OUTPUT).

The outputs carry ``image_embeds``, ``last_hidden_state`` and ``penultimate_hidden_states``, the
names the nodes that read them (unCLIP, style models, IP-Adapter packs) expect.
Loaded encoders are kept in the registry's model cache, like checkpoints.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import ClipVision, ClipVisionOutput, Context, Image, OneOf, Tooltip, files_in, node
from .loaders import _model_file


@node(category="loaders", display_name="Load CLIP Vision")
def CLIPVisionLoader(
    clip_name: Annotated[str, OneOf(files_in("clip_vision")), Tooltip("The CLIP vision encoder file.")],
    *,
    ctx: Context,
) -> ClipVision:
    """Loads a CLIP image encoder (ViT-L/14, ViT-H/14 or ViT-bigG/14) from the clip_vision folder."""
    from diffusion.control.clip_vision import load_clip_vision
    from diffusion.memory import pick_device

    path = _model_file(ctx, "clip_vision", clip_name, "CLIP vision model")
    precision = ctx.services.precision

    def load() -> Any:
        return load_clip_vision(path, precision=precision, device=pick_device())

    return ctx.services.model_cache().get(path, ("clip_vision", precision), load)


@node(category="conditioning", display_name="CLIP Vision Encode")
def CLIPVisionEncode(
    clip_vision: ClipVision,
    image: Image,
    crop: Annotated[str, OneOf(("center", "none")),
                    Tooltip("center: scale the short side and crop the middle; none: squash to a square.")],
) -> ClipVisionOutput:
    """Encodes images with a CLIP vision model, resized to its input size as ComfyUI does."""
    from diffusion.control.clip_vision import encode_image

    if getattr(image, "ndim", 0) != 4:
        raise ValueError("CLIPVisionEncode: the image must be an IMAGE batch [B, H, W, C]")
    return encode_image(clip_vision, image, crop == "center")
