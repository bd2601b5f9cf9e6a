"""Conditioning for SD-family model kinds with their own image inputs: inpainting models (9-channel UNets).

The images are set on the CONDITIONING entries (``concat_latent_image``, ``concat_mask``),
which the sampler's denoiser concatenates to the UNet input of an inpainting model.
"""

from __future__ import annotations

from typing import Annotated, Any

from diffusion import conditioning as cond_ops

from .api import Conditioning, Image, Latent, Mask, Output, Tooltip, Vae, node
from .vae import _vae


@node(category="conditioning/inpaint")
def InpaintModelConditioning(
    positive: Conditioning,
    negative: Conditioning,
    vae: Vae,
    pixels: Image,
    mask: Annotated[Mask, Tooltip("Where to repaint (1) and where to keep the image (0).")],
    noise_mask: Annotated[bool, Tooltip("Also keep the unmasked part of the latent as it is while sampling: "
                                        "better for a model that was not trained for inpainting.")] = True,
) -> tuple[Annotated[Conditioning, Output("positive")], Annotated[Conditioning, Output("negative")],
           Annotated[Latent, Output("latent")]]:
    """Prepares an inpainting model's extra inputs: the mask and the image with the masked part grey."""
    from diffusion import vae as vae_ops
    from diffusion.control.inpaint import inpaint_model_inputs

    model = _vae(vae)
    try:
        grey, resized = inpaint_model_inputs(pixels, mask)
    except ValueError as exc:
        raise ValueError(f"InpaintModelConditioning: {exc}") from None
    concat = vae_ops.encode(model, grey)
    latent: dict[str, Any] = {"samples": vae_ops.encode(model, pixels)}
    if noise_mask:
        latent["noise_mask"] = resized
    values = {"concat_latent_image": concat, "concat_mask": resized}
    return cond_ops.set_values(positive, values), cond_ops.set_values(negative, values), latent
