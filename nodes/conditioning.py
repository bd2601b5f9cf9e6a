"""Conditioning nodes: prompts to CONDITIONING, clip skip, and edits of conditioning lists.

Class names, inputs, defaults, ranges and categories are ComfyUI's (``nodes.py`` and
``comfy_extras/nodes_clip_sdxl.py``). CLIP is a :class:`diffusion.text.ClipTextEncoder`;
textual-inversion embeddings are looked up in the registry's ``embeddings`` folders.
"""

from __future__ import annotations

from typing import Annotated

from diffusion import conditioning as cond_ops
from diffusion.text import ClipTextEncoder

from .api import REQUIRED, Clip, Conditioning, Context, Multiline, Range, Tooltip, node
from .latent import MAX_RESOLUTION

_NO_CLIP = ("ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint "
            "does not contain a valid clip or text encoder model.")


def _clip(clip: ClipTextEncoder | None) -> ClipTextEncoder:
    """The CLIP input, or ComfyUI's error for a checkpoint without a text encoder."""
    if clip is None:
        raise RuntimeError(_NO_CLIP)
    return clip


@node(category="conditioning", display_name="CLIP Text Encode (Prompt)")
def CLIPTextEncode(
    text: Annotated[str, Multiline(dynamic_prompts=True), Tooltip("The text to be encoded.")],
    clip: Annotated[Clip, Tooltip("The CLIP model used for encoding the text.")],
    *,
    ctx: Context,
) -> Annotated[Conditioning, Tooltip("A conditioning containing the embedded text used to guide the diffusion model.")]:
    """Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images."""  # noqa: E501
    return cond_ops.encode_text(_clip(clip), text, ctx.folders.paths("embeddings"))


@node(category="conditioning", display_name="CLIP Set Last Layer")
def CLIPSetLastLayer(
    clip: Clip,
    stop_at_clip_layer: Annotated[int, Range(-24, -1, step=1)] = -1,
) -> Clip:
    """Makes CLIP stop at an earlier layer ("clip skip"): -1 is the last layer, -2 the one before it."""
    return _clip(clip).with_clip_skip(stop_at_clip_layer)


@node(category="conditioning", display_name="Conditioning (Combine)")
def ConditioningCombine(conditioning_1: Conditioning, conditioning_2: Conditioning) -> Conditioning:
    """Joins two conditionings into one list; the sampler applies every entry and averages their predictions."""
    return list(conditioning_1) + list(conditioning_2)


@node(category="conditioning", display_name="Conditioning (Set Area)")
def ConditioningSetArea(
    conditioning: Conditioning,
    width: Annotated[int, Range(64, MAX_RESOLUTION, step=8)] = 64,
    height: Annotated[int, Range(64, MAX_RESOLUTION, step=8)] = 64,
    x: Annotated[int, Range(0, MAX_RESOLUTION, step=8)] = 0,
    y: Annotated[int, Range(0, MAX_RESOLUTION, step=8)] = 0,
    strength: Annotated[float, Range(0.0, 10.0, step=0.01)] = 1.0,
) -> Conditioning:
    """Limits the conditioning to a rectangle of the image (in pixels) with the given strength."""
    area = (height // 8, width // 8, y // 8, x // 8)  # latent units, as the sampler reads it
    return cond_ops.set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False})


@node(category="advanced/conditioning")
def ConditioningZeroOut(conditioning: Conditioning) -> Conditioning:
    """Replaces the conditioning and its pooled output with zeros (SDXL-style "empty" negative prompts)."""
    return cond_ops.zero_out(conditioning)


@node(category="advanced/conditioning", python_module="comfy_extras.nodes_clip_sdxl")
def CLIPTextEncodeSDXL(
    clip: Clip,
    width: Annotated[int, Range(0, MAX_RESOLUTION)] = 1024,
    height: Annotated[int, Range(0, MAX_RESOLUTION)] = 1024,
    crop_w: Annotated[int, Range(0, MAX_RESOLUTION)] = 0,
    crop_h: Annotated[int, Range(0, MAX_RESOLUTION)] = 0,
    target_width: Annotated[int, Range(0, MAX_RESOLUTION)] = 1024,
    target_height: Annotated[int, Range(0, MAX_RESOLUTION)] = 1024,
    text_g: Annotated[str, Multiline(dynamic_prompts=True)] = REQUIRED,
    text_l: Annotated[str, Multiline(dynamic_prompts=True)] = REQUIRED,
    *,
    ctx: Context,
) -> Conditioning:
    """Encodes text_g with CLIP-G and text_l with CLIP-L for SDXL, with its size and crop conditioning."""
    sizes = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
             "target_width": target_width, "target_height": target_height}
    return cond_ops.encode_sdxl(_clip(clip), text_g, text_l, ctx.folders.paths("embeddings"), sizes)


@node(category="advanced/conditioning", python_module="comfy_extras.nodes_clip_sdxl")
def CLIPTextEncodeSDXLRefiner(
    ascore: Annotated[float, Range(0.0, 1000.0, step=0.01)] = 6.0,
    width: Annotated[int, Range(0, MAX_RESOLUTION)] = 1024,
    height: Annotated[int, Range(0, MAX_RESOLUTION)] = 1024,
    text: Annotated[str, Multiline(dynamic_prompts=True)] = REQUIRED,
    clip: Clip = REQUIRED,
    *,
    ctx: Context,
) -> Conditioning:
    """Encodes a prompt for the SDXL refiner, with its aesthetic score and size conditioning."""
    extra = {"aesthetic_score": ascore, "width": width, "height": height}
    return cond_ops.encode_text(_clip(clip), text, ctx.folders.paths("embeddings"), extra)
