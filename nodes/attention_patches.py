"""UNet attention patch nodes: perturbed-attention guidance (and the other attention patches of issue 14).

Each returns a clone of the MODEL with attention patches or a post-CFG hook in its options
(``diffusion.unet_patches.attention``); the model given is never changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Context, Model, OneOf, Range, files_in, node
from .loaders import _model_file


@node(category="model_patches/unet")
def PerturbedAttentionGuidance(
    model: Model, scale: Annotated[float, Range(0.0, 100.0, step=0.01, round=0.01)] = 3.0,
) -> Model:
    """Perturbed-attention guidance: steers away from a prediction whose middle-block self-attention is disabled."""
    from diffusion.patching import append_model_option, set_model_option
    from diffusion.unet_patches.attention import perturbed_attention_guidance

    out = model.clone()
    append_model_option(out.options, "sampler_post_cfg_function", perturbed_attention_guidance(scale))
    set_model_option(out.options, "disable_cfg1_optimization", True)
    return out


@node(category="model_patches/unet")
def HyperTile(
    model: Model,
    tile_size: Annotated[int, Range(1, 2048)] = 256,
    swap_size: Annotated[int, Range(1, 128)] = 2,
    max_depth: Annotated[int, Range(0, 10)] = 0,
    scale_depth: bool = False,
) -> Model:
    """Runs self-attention on tiles of the latent (faster at large sizes) at the top ``max_depth + 1`` levels."""
    from diffusion.patching import add_model_patch
    from diffusion.unet_patches.hypertile import hypertile_patches

    tile_in, tile_out = hypertile_patches(tile_size, swap_size, max_depth, scale_depth)
    out = model.clone()
    add_model_patch(out.options, "attn1_patch", tile_in)
    add_model_patch(out.options, "attn1_output_patch", tile_out)
    return out


@node(category="loaders", display_name="HypernetworkLoader")
def HypernetworkLoader(
    model: Model,
    hypernetwork_name: Annotated[str, OneOf(files_in("hypernetworks"))],
    strength: Annotated[float, Range(-10.0, 10.0, step=0.01)] = 1.0,
    *,
    ctx: Context,
) -> Model:
    """Applies an A1111 hypernetwork from the hypernetworks folder to the keys and values of every attention."""
    from diffusion.hypernetwork import hypernetwork_patch, load_hypernetwork
    from diffusion.patching import add_model_patch

    path = _model_file(ctx, "hypernetworks", hypernetwork_name, "hypernetwork")

    def load() -> Any:
        return load_hypernetwork(path)

    patch = hypernetwork_patch(ctx.services.model_cache().get(path, ("hypernetwork",), load), strength)
    out = model.clone()
    add_model_patch(out.options, "attn1_patch", patch)
    add_model_patch(out.options, "attn2_patch", patch)
    return out


@node(category="_for_testing", display_name="Self-Attention Guidance", experimental=True)
def SelfAttentionGuidance(
    model: Model,
    scale: Annotated[float, Range(-2.0, 5.0, step=0.01)] = 0.5,
    blur_sigma: Annotated[float, Range(0.0, 10.0, step=0.1)] = 2.0,
) -> Model:
    """Self-attention guidance: steers away from the prediction of a copy blurred where the model attends."""
    from diffusion.patching import append_model_option, set_model_option, set_model_patch_replace
    from diffusion.unet_patches.sag import self_attention_guidance

    record, post_cfg = self_attention_guidance(scale, blur_sigma)
    out = model.clone()
    append_model_option(out.options, "sampler_post_cfg_function", post_cfg)
    set_model_option(out.options, "disable_cfg1_optimization", True)
    set_model_patch_replace(out.options, record, "attn1", "middle", 0, 0)
    return out


@node(category="model_patches/unet")
def TomePatchModel(model: Model, ratio: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.3) -> Model:
    """Token merging: averages similar self-attention queries at the top level (faster, slightly different)."""
    from diffusion.patching import add_model_patch
    from diffusion.unet_patches.tome import tome_patches

    merge_in, unmerge_out = tome_patches(ratio)
    out = model.clone()
    add_model_patch(out.options, "attn1_patch", merge_in)
    add_model_patch(out.options, "attn1_output_patch", unmerge_out)
    return out
