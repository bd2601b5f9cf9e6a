"""PhotoMaker nodes (ComfyUI's ``comfy_extras/nodes_photomaker.py``): load a PhotoMaker v1 ID encoder
(PHOTOMAKER) and fuse a face image into the class word of an SDXL prompt.

The torch work is :mod:`diffusion.photomaker`; loaded files are kept in the registry's model cache.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Clip, Conditioning, Context, Image, Multiline, OneOf, Socket, Tooltip, files_in, node
from .conditioning import _clip
from .loaders import _model_file

Photomaker = Socket("PHOTOMAKER")
_MODULE = "comfy_extras.nodes_photomaker"
_CATEGORY = "_for_testing/photomaker"


@node(category=_CATEGORY, experimental=True, python_module=_MODULE)
def PhotoMakerLoader(
    photomaker_model_name: Annotated[str, OneOf(files_in("photomaker"), v3=True),
                                     Tooltip("The PhotoMaker v1 file (photomaker-v1.bin).")],
    *,
    ctx: Context,
) -> Photomaker:
    """Loads a PhotoMaker v1 ID encoder from the photomaker folder."""
    from diffusion.memory import pick_device
    from diffusion.photomaker import load_photomaker

    path = _model_file(ctx, "photomaker", photomaker_model_name, "PhotoMaker model")
    precision = ctx.services.precision

    def load() -> Any:
        return load_photomaker(path, precision=precision, device=pick_device())

    return ctx.services.model_cache().get(path, ("photomaker", precision), load)


@node(category=_CATEGORY, experimental=True, python_module=_MODULE)
def PhotoMakerEncode(
    photomaker: Photomaker,
    image: Annotated[Image, Tooltip("The face; only the first image of a batch is used, as in ComfyUI.")],
    clip: Clip,
    text: Annotated[str, Multiline(dynamic_prompts=True),
                    Tooltip("The prompt; the word photomaker after the class word (a man photomaker) marks it.")]
    = "photograph of photomaker",
    *,
    ctx: Context,
) -> Conditioning:
    """Encodes the prompt without its trigger word, with the class word's token fused with the face's ID embedding."""
    from diffusion.photomaker import encode_photomaker

    if getattr(image, "ndim", 0) != 4:
        raise ValueError("PhotoMakerEncode: the image must be an IMAGE batch [B, H, W, C]")
    try:
        return encode_photomaker(photomaker, _clip(clip), text, image, ctx.folders.paths("embeddings"))
    except ValueError as exc:
        raise ValueError(f"PhotoMakerEncode: {exc}") from None
