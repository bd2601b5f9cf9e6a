"""GLIGEN nodes: loading a text-box GLIGEN model and placing phrases in boxes on a conditioning.

GLIGENTextBoxApply adds ``(pooled phrase, h, w, y, x)`` (latent pixels) to the entries'
``"gligen"`` option, ComfyUI's ``("position", model, boxes)``; the sampler runs the model's
gated self-attention inside the UNet for those entries (``diffusion.gligen``).
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Clip, Conditioning, Context, Multiline, OneOf, Range, Socket, Tooltip, files_in, node
from .conditioning import _clip
from .latent import MAX_RESOLUTION
from .loaders import _model_file

Gligen = Socket("GLIGEN")
#: Pixels per latent pixel: the boxes are given in pixels and kept in latent pixels.
LATENT_FACTOR = 8

BoxSize = Annotated[int, Range(8, MAX_RESOLUTION, step=8)]
BoxPosition = Annotated[int, Range(0, MAX_RESOLUTION, step=8)]


@node(category="loaders", python_module="nodes")
def GLIGENLoader(
    gligen_name: Annotated[str, OneOf(files_in("gligen")), Tooltip("The GLIGEN text-box model file.")],
    *,
    ctx: Context,
) -> Gligen:
    """Loads a GLIGEN text-box model (its position net and gated attention layers) from the gligen folder."""
    import torch

    from diffusion.gligen import load_gligen
    from diffusion.memory import pick_device

    path = _model_file(ctx, "gligen", gligen_name, "GLIGEN model")

    def load() -> Any:
        return load_gligen(path, dtype=torch.float32, device=pick_device())

    return ctx.services.model_cache().get(path, ("gligen",), load)


@node(category="conditioning/gligen", python_module="nodes")
def GLIGENTextBoxApply(
    conditioning_to: Conditioning,
    clip: Clip,
    gligen_textbox_model: Gligen,
    text: Annotated[str, Multiline(dynamic_prompts=True), Tooltip("What is in the box.")],
    width: Annotated[BoxSize, Tooltip("The box's width in pixels.")] = 64,
    height: Annotated[BoxSize, Tooltip("The box's height in pixels.")] = 64,
    x: Annotated[BoxPosition, Tooltip("The box's left edge in pixels.")] = 0,
    y: Annotated[BoxPosition, Tooltip("The box's top edge in pixels.")] = 0,
) -> Conditioning:
    """Places ``text`` in a box of the image: GLIGEN steers the sampler to draw it there (boxes add up)."""
    from diffusion.gligen import MAX_OBJECTS
    from diffusion.gligen import Gligen as GligenModel

    if not isinstance(gligen_textbox_model, GligenModel):
        raise TypeError("GLIGENTextBoxApply: gligen_textbox_model must come from GLIGENLoader")
    _, pooled = _clip(clip).encode(text)
    if pooled.shape[-1] != gligen_textbox_model.phrase_width:
        raise ValueError(f"GLIGENTextBoxApply: this CLIP gives {pooled.shape[-1]}-wide phrases, the GLIGEN model "
                         f"takes {gligen_textbox_model.phrase_width}: use a GLIGEN model for this checkpoint")
    box = (pooled, height // LATENT_FACTOR, width // LATENT_FACTOR, y // LATENT_FACTOR, x // LATENT_FACTOR)
    out = []
    for cond, options in conditioning_to:
        previous = list(options["gligen"][2]) if options.get("gligen") is not None else []
        if len(previous) >= MAX_OBJECTS:
            raise ValueError(f"GLIGENTextBoxApply: at most {MAX_OBJECTS} boxes per conditioning")
        out.append([cond, {**options, "gligen": ("position", gligen_textbox_model, [*previous, box])}])
    return out
