"""CLIP vision nodes: loading an image encoder (CLIP_VISION), encoding images (CLIP_VISION_OUTPUT), and the
T2I style models that turn those encodings into extra prompt tokens (STYLE_MODEL).

The outputs carry ``image_embeds``, ``last_hidden_state`` and ``penultimate_hidden_states``, the
names the nodes that read them (unCLIP, style models, IP-Adapter packs) expect.
Loaded encoders are kept in the registry's model cache, like checkpoints.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import (
    REQUIRED,
    ClipVision,
    ClipVisionOutput,
    Conditioning,
    Context,
    Image,
    OneOf,
    Range,
    StyleModel,
    Tooltip,
    files_in,
    node,
)
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


@node(category="loaders", display_name="Load Style Model")
def StyleModelLoader(
    style_model_name: Annotated[str, OneOf(files_in("style_models")), Tooltip("The T2I style adapter file.")],
    *,
    ctx: Context,
) -> StyleModel:
    """Loads a T2I-Adapter style model from the style_models folder."""
    from diffusion.control.style import load_style_model
    from diffusion.memory import pick_device

    path = _model_file(ctx, "style_models", style_model_name, "Style model")
    precision = ctx.services.precision

    def load() -> Any:
        return load_style_model(path, precision=precision, device=pick_device())

    return ctx.services.model_cache().get(path, ("style_model", precision), load)


@node(category="conditioning/style_model", display_name="Apply Style Model")
def StyleModelApply(
    conditioning: Conditioning,
    style_model: StyleModel,
    clip_vision_output: ClipVisionOutput,
    strength: Annotated[float, Range(0.0, 10.0, step=0.001)] = 1.0,
    strength_type: Annotated[str, OneOf(("multiply", "attn_bias"))] = REQUIRED,
) -> Conditioning:
    """Appends the style model's tokens for an encoded image to every conditioning entry's prompt tokens."""
    import torch

    if strength_type == "attn_bias" and strength != 1.0:
        raise ValueError("StyleModelApply: the attn_bias strength type is not supported yet (only at strength 1.0); "
                         "use multiply")
    try:
        tokens = style_model.tokens(clip_vision_output.last_hidden_state)
    except ValueError as exc:
        raise ValueError(f"StyleModelApply: {exc}") from None
    tokens = tokens.flatten(0, 1).unsqueeze(0)
    if strength_type == "multiply":
        tokens = tokens * strength
    out = []
    for cond, options in conditioning:
        if cond.shape[-1] != tokens.shape[-1]:
            raise ValueError(f"StyleModelApply: the style tokens are {tokens.shape[-1]} wide but the conditioning "
                             f"is {cond.shape[-1]} wide")
        out.append([torch.cat((cond, tokens.to(cond.dtype).expand(cond.shape[0], -1, -1)), dim=1), dict(options)])
    return out
