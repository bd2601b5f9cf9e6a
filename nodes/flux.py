"""Flux.1 nodes: the CLIP-L + T5 text encode, guidance in the conditioning, Flux model sampling.

Names, inputs, defaults and categories are ComfyUI's (``comfy_extras/nodes_flux.py`` and
``nodes_model_advanced.py``). Flux dev reads ``guidance`` from the positive conditioning's
options (a distilled CFG scale); schnell has no guidance input and ignores it.
"""

from __future__ import annotations

from typing import Annotated

from diffusion import conditioning as cond_ops
from diffusion.families import flow

from .api import Clip, Conditioning, Context, Model, Multiline, Range, node
from .sd3 import _flow_clip, _with_schedule

_FLUX = "comfy_extras.nodes_flux"
_GUIDANCE = Annotated[float, Range(0.0, 100.0, step=0.1)]


@node(category="advanced/conditioning/flux", python_module=_FLUX)
def CLIPTextEncodeFlux(
    clip: Clip,
    clip_l: Annotated[str, Multiline(dynamic_prompts=True)],
    t5xxl: Annotated[str, Multiline(dynamic_prompts=True)],
    guidance: _GUIDANCE = 3.5,
    *,
    ctx: Context,
) -> Conditioning:
    """Encodes ``clip_l`` with CLIP-L (pooled) and ``t5xxl`` with T5-XXL, and sets the guidance."""
    encoder = _flow_clip(clip, "flux", "CLIPTextEncodeFlux")
    dirs = ctx.folders.paths("embeddings")
    tokens = encoder.tokenize(clip_l, dirs)
    tokens["t5xxl"] = encoder.tokenize(t5xxl, dirs)["t5xxl"]
    cond, pooled = encoder.encode_tokens(tokens)
    return cond_ops.from_encoding(cond, pooled, {"guidance": guidance})


@node(category="advanced/conditioning/flux", python_module=_FLUX)
def FluxGuidance(conditioning: Conditioning, guidance: _GUIDANCE = 3.5) -> Conditioning:
    """Sets the distilled guidance scale Flux dev reads from the conditioning."""
    return cond_ops.set_values(conditioning, {"guidance": guidance})


@node(category="advanced/conditioning/flux", python_module=_FLUX)
def FluxDisableGuidance(conditioning: Conditioning) -> Conditioning:
    """Removes the guidance value, for models with a guidance embedder that should not get one."""
    return cond_ops.set_values(conditioning, {"guidance": None})


@node(category="advanced/model", display_name="ModelSamplingFlux", python_module="comfy_extras.nodes_model_advanced")
def ModelSamplingFlux(
    model: Model,
    max_shift: Annotated[float, Range(0.0, 100.0, step=0.01)] = 1.15,
    base_shift: Annotated[float, Range(0.0, 100.0, step=0.01)] = 0.5,
    width: Annotated[int, Range(16, 16384, step=8)] = 1024,
    height: Annotated[int, Range(16, 16384, step=8)] = 1024,
) -> Model:
    """Samples with Flux's schedule, shifted for the image size (base_shift at 256 tokens, max_shift at 4096)."""
    return _with_schedule(model, flow.flux_schedule(flow.flux_shift_for_size(width, height, max_shift, base_shift)))
