"""SD3 / SD3.5 nodes: 16-channel empty latents, the three-stream text encode, flow model sampling,
and the three-file text-encoder loader.

Names, inputs, defaults and categories are ComfyUI's (``comfy_extras/nodes_sd3.py`` and
``nodes_model_advanced.py``). A MODEL here is a ``diffusion.families.model.TransformerModel``
(or any clonable MODEL: the ModelSampling nodes give it a flow schedule), a CLIP a
``FlowTextEncoder``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch

from diffusion import conditioning as cond_ops
from diffusion.families import flow

from .api import Clip, Conditioning, Context, Latent, Model, Multiline, OneOf, Range, files_in, node
from .latent import MAX_RESOLUTION

_SD3 = "comfy_extras.nodes_sd3"
_ADVANCED = "comfy_extras.nodes_model_advanced"


@node(category="latent/sd3", python_module=_SD3)
def EmptySD3LatentImage(
    width: Annotated[int, Range(16, MAX_RESOLUTION, step=16)] = 1024,
    height: Annotated[int, Range(16, MAX_RESOLUTION, step=16)] = 1024,
    batch_size: Annotated[int, Range(1, 4096)] = 1,
) -> Latent:
    """A batch of empty 16-channel latents (SD3, SD3.5, Flux) for the given image size."""
    return {"samples": torch.zeros([batch_size, 16, height // 8, width // 8], device="cpu")}


def _flow_clip(clip: Any, family: str, node_name: str) -> Any:
    """The CLIP input if it is an SD3/Flux text encoder of ``family``, else a one-line error."""
    if clip is None:
        raise RuntimeError("ERROR: clip input is invalid: None")
    if getattr(clip, "family", None) != family:
        kind = getattr(clip, "family", None) or getattr(clip, "kind", type(clip).__name__)
        raise ValueError(f"{node_name} needs {family.upper()} text encoders; this CLIP is {kind!r}")
    return clip


@node(category="advanced/conditioning", python_module=_SD3)
def CLIPTextEncodeSD3(
    clip: Clip,
    clip_l: Annotated[str, Multiline(dynamic_prompts=True)],
    clip_g: Annotated[str, Multiline(dynamic_prompts=True)],
    t5xxl: Annotated[str, Multiline(dynamic_prompts=True)],
    empty_padding: Annotated[str, OneOf(["none", "empty_prompt"], v3=True)],
    *,
    ctx: Context,
) -> Conditioning:
    """Encodes one prompt per SD3 text encoder; with ``none``, an empty prompt leaves its encoder out."""
    encoder = _flow_clip(clip, "sd3", "CLIPTextEncodeSD3")
    dirs = ctx.folders.paths("embeddings")
    no_padding = empty_padding == "none"
    tokens = {key: [] for key in ("l", "g", "t5xxl")}
    for key, text in (("l", clip_l), ("g", clip_g), ("t5xxl", t5xxl)):
        if not (no_padding and len(text) == 0):
            tokens[key] = encoder.tokenize(text, dirs).get(key, [])
    if len(tokens["l"]) != len(tokens["g"]):  # L and G sit side by side: pad the shorter with empty chunks
        empty = encoder.tokenize("", dirs)
        while len(tokens["l"]) < len(tokens["g"]):
            tokens["l"] += empty["l"]
        while len(tokens["g"]) < len(tokens["l"]):
            tokens["g"] += empty["g"]
    cond, pooled = encoder.encode_tokens(tokens)
    return cond_ops.from_encoding(cond, pooled)


def _with_schedule(model: Any, schedule: flow.FlowSchedule) -> Any:
    """A clone of ``model`` that samples with ``schedule``."""
    if model is None or not hasattr(model, "clone"):
        raise ValueError("ModelSampling needs a MODEL input")
    out = model.clone()
    out.schedule = schedule
    return out


@node(category="advanced/model", display_name="ModelSamplingSD3", python_module=_ADVANCED)
def ModelSamplingSD3(
    model: Model,
    shift: Annotated[float, Range(0.0, 100.0, step=0.01)] = 3.0,
) -> Model:
    """Samples the model with SD3's flow-matching schedule, time-shifted by ``shift`` (higher: more noise)."""
    return _with_schedule(model, flow.sd3_schedule(shift, 1000.0))


@node(category="advanced/model", display_name="ModelSamplingAuraFlow", python_module=_ADVANCED)
def ModelSamplingAuraFlow(
    model: Model,
    shift: Annotated[float, Range(0.0, 100.0, step=0.01)] = 1.73,
) -> Model:
    """Samples the model with AuraFlow's flow-matching schedule (SD3's shift, timesteps fed as sigma)."""
    return _with_schedule(model, flow.sd3_schedule(shift, 1.0))


def _text_encoder_path(ctx: Context, name: str) -> Path:
    path = ctx.folders.full_path("text_encoders", name)
    if path is None:
        raise FileNotFoundError(f"text encoder not found: {name} (looked in the 'text_encoders' model folders)")
    return path


@node(category="advanced/loaders", python_module=_SD3)
def TripleCLIPLoader(
    clip_name1: Annotated[str, OneOf(files_in("text_encoders"), v3=True)],
    clip_name2: Annotated[str, OneOf(files_in("text_encoders"), v3=True)],
    clip_name3: Annotated[str, OneOf(files_in("text_encoders"), v3=True)],
    *,
    ctx: Context,
) -> Clip:
    """Loads SD3's three text encoders (CLIP-L, CLIP-G, T5-XXL) from separate files, told apart by their weights."""
    from diffusion.families.loader import load_text_encoders, sd3_slots
    from diffusion.memory import pick_device

    paths = [_text_encoder_path(ctx, n) for n in (clip_name1, clip_name2, clip_name3)]
    precision = ctx.services.precision

    def load() -> Any:
        return load_text_encoders(sd3_slots(paths), "sd3", precision=precision, device=pick_device())

    return ctx.services.model_cache().get(paths[0], ("sd3_clip", precision, *map(str, paths[1:])), load)
