"""Conditioning for SD-family model kinds with their own image inputs: inpainting models (9-channel UNets)
and InstructPix2Pix (8-channel UNets, the source image's latent beside the noisy one).

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


@node(category="conditioning/instructpix2pix", python_module="comfy_extras.nodes_ip2p")
def InstructPixToPixConditioning(
    positive: Conditioning,
    negative: Conditioning,
    vae: Vae,
    pixels: Annotated[Image, Tooltip("The image to edit as the prompt says.")],
) -> tuple[Annotated[Conditioning, Output("positive")], Annotated[Conditioning, Output("negative")],
           Annotated[Latent, Output("latent")]]:
    """Sets the image to edit on both conditionings for an InstructPix2Pix model; the latent starts empty."""
    from diffusion import vae as vae_ops

    if getattr(pixels, "ndim", 0) != 4:
        raise ValueError("InstructPixToPixConditioning: pixels must be an IMAGE batch [B, H, W, C]")
    concat = vae_ops.encode(_vae(vae), pixels)  # cropped to multiples of 8, centred
    values = {"concat_latent_image": concat}
    latent = {"samples": concat.new_zeros(concat.shape)}
    return cond_ops.set_values(positive, values), cond_ops.set_values(negative, values), latent
