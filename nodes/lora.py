"""LoRA loader nodes: a LoRA-family file's adapters added as weight patches to a MODEL (and a CLIP).

The parsed file (``diffusion.lora.load.read_lora``) is kept in the model cache, keyed by
the file, so a strength change re-parses nothing: only this node and what follows it run
again, and the patcher recomputes only the weights this LoRA touches. The MODEL and CLIP
given are never changed; the outputs are clones sharing their base modules.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Clip, Context, Model, OneOf, Output, Range, Tooltip, files_in, node
from .loaders import _model_file

Strength = Annotated[float, Range(-100.0, 100.0, step=0.01)]
LoraName = Annotated[str, OneOf(files_in("loras")), Tooltip("The name of the LoRA file.")]


def _lora_file(ctx: Context, lora_name: str) -> Any:
    """The parsed LoRA file, from the model cache (read once per file version)."""
    from diffusion.lora.load import read_lora

    path = _model_file(ctx, "loras", lora_name, "LoRA")
    return ctx.services.model_cache().get(path, ("lora",), lambda: read_lora(path))


def apply_lora(ctx: Context, model: Any, clip: Any, lora_name: str, strength_model: float,
               strength_clip: float) -> tuple[Any, Any]:
    """``model`` and ``clip`` with the LoRA's patches at the given strengths (either may be None: left as is)."""
    from diffusion.lora.load import lora_patches

    if strength_model == 0 and strength_clip == 0:
        return model, clip
    lora = _lora_file(ctx, lora_name)
    placed = lora_patches(lora, model if strength_model != 0 else None, clip if strength_clip != 0 else None)
    if model is not None and strength_model != 0:
        model = model.with_patches(placed.unet, strength_model)
    if clip is not None and strength_clip != 0:
        clip = clip.with_patches(placed.clip, strength_clip)
    return model, clip


@node(category="loaders", display_name="Load LoRA")
def LoraLoader(
    model: Annotated[Model, Tooltip("The diffusion model the LoRA will be applied to.")],
    clip: Annotated[Clip, Tooltip("The CLIP model the LoRA will be applied to.")],
    lora_name: LoraName,
    strength_model: Annotated[Strength, Tooltip("How strongly to change the diffusion model.")] = 1.0,
    strength_clip: Annotated[Strength, Tooltip("How strongly to change the CLIP model.")] = 1.0,
    *,
    ctx: Context,
) -> tuple[
    Annotated[Model, Output(tooltip="The diffusion model with the LoRA's patches.")],
    Annotated[Clip, Output(tooltip="The CLIP model with the LoRA's patches.")],
]:
    """Adds a LoRA (or LoCon, LoHa, LoKr, ...) to a diffusion model and its text encoder; stack several to mix them."""
    return apply_lora(ctx, model, clip, lora_name, strength_model, strength_clip)


@node(category="loaders", display_name="LoraLoaderModelOnly")
def LoraLoaderModelOnly(model: Model, lora_name: LoraName, strength_model: Strength = 1.0, *, ctx: Context) -> Model:
    """Adds a LoRA to the diffusion model only (its text-encoder layers, if any, are skipped)."""
    return apply_lora(ctx, model, None, lora_name, strength_model, 0.0)[0]
