"""UNet patch nodes: FreeU, Kohya deep shrink, attention projection scaling.

Each returns a clone of the MODEL (or CLIP) with a call-time block patch in its options
(``diffusion.unet_patches``) or weight patches; the model given is never changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import REQUIRED, Clip, Model, OneOf, Range, node

Factor = Annotated[float, Range(0.0, 10.0, step=0.01)]
_RESIZE = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")


def _with_output_patch(model: Any, patch: Any) -> Any:
    from diffusion.patching import add_model_patch

    out = model.clone()
    add_model_patch(out.options, "output_block_patch", patch)
    return out


@node(category="model_patches/unet")
def FreeU(model: Model, b1: Factor = 1.1, b2: Factor = 1.2, s1: Factor = 0.9, s2: Factor = 0.2) -> Model:
    """FreeU: strengthens the UNet's backbone features (b) and damps the skips' low frequencies (s)."""
    from diffusion.unet_patches.freeu import freeu_patch

    channels = model.model.config["block_out_channels"][0]
    return _with_output_patch(model, freeu_patch(channels, b1, b2, s1, s2, version=1))


@node(category="model_patches/unet")
def FreeU_V2(model: Model, b1: Factor = 1.3, b2: Factor = 1.4, s1: Factor = 0.9, s2: Factor = 0.2) -> Model:
    """FreeU v2: as FreeU, with the backbone scale weighted by each pixel's normalised mean activation."""
    from diffusion.unet_patches.freeu import freeu_patch

    channels = model.model.config["block_out_channels"][0]
    return _with_output_patch(model, freeu_patch(channels, b1, b2, s1, s2, version=2))


@node(category="model_patches/unet", display_name="PatchModelAddDownscale (Kohya Deep Shrink)")
def PatchModelAddDownscale(
    model: Model,
    block_number: Annotated[int, Range(1, 32, step=1)] = 3,
    downscale_factor: Annotated[float, Range(0.1, 9.0, step=0.001)] = 2.0,
    start_percent: Annotated[float, Range(0.0, 1.0, step=0.001)] = 0.0,
    end_percent: Annotated[float, Range(0.0, 1.0, step=0.001)] = 0.35,
    downscale_after_skip: bool = True,
    downscale_method: Annotated[str, OneOf(_RESIZE, v3=True)] = REQUIRED,
    upscale_method: Annotated[str, OneOf(_RESIZE, v3=True)] = REQUIRED,
) -> Model:
    """Runs the deeper UNet blocks at a lower resolution early in sampling (fewer repeats at large sizes)."""
    from diffusion.patching import add_model_patch
    from diffusion.unet_patches.deep_shrink import downscale_patch, restore_patch

    schedule = model.schedule
    shrink = downscale_patch(block_number, downscale_factor, schedule.percent_to_sigma(start_percent),
                             schedule.percent_to_sigma(end_percent), downscale_method)
    out = model.clone()
    add_model_patch(out.options, "input_block_patch_after_skip" if downscale_after_skip else "input_block_patch",
                    shrink)
    add_model_patch(out.options, "output_block_patch", restore_patch(upscale_method))
    return out


def _scaled_model(model: Any, attention: str, q: float, k: float, v: float, out: float) -> Any:
    from diffusion.unet_patches.attention_scale import scaled_projections

    factors = {f"{attention}.to_q": q, f"{attention}.to_k": k, f"{attention}.to_v": v, f"{attention}.to_out.0": out}
    result = model.clone()
    keys = [key for key, _ in model.model.named_parameters()]
    result.weight_patches = scaled_projections(model.weight_patches, keys, factors)
    return result


@node(category="_for_testing/attention_experiments")
def UNetSelfAttentionMultiply(model: Model, q: Factor = 1.0, k: Factor = 1.0, v: Factor = 1.0,
                              out: Factor = 1.0) -> Model:
    """Multiplies the UNet's self-attention projections (query, key, value, output) by factors."""
    return _scaled_model(model, "attn1", q, k, v, out)


@node(category="_for_testing/attention_experiments")
def UNetCrossAttentionMultiply(model: Model, q: Factor = 1.0, k: Factor = 1.0, v: Factor = 1.0,
                               out: Factor = 1.0) -> Model:
    """Multiplies the UNet's cross-attention projections (query, key, value, output) by factors."""
    return _scaled_model(model, "attn2", q, k, v, out)


@node(category="_for_testing/attention_experiments")
def CLIPAttentionMultiply(clip: Clip, q: Factor = 1.0, k: Factor = 1.0, v: Factor = 1.0, out: Factor = 1.0) -> Clip:
    """Multiplies the text encoders' self-attention projections by factors."""
    from diffusion.unet_patches.attention_scale import scaled_projections

    factors = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v, "self_attn.out_proj": out}
    keys = [f"{slot}.{key}" for slot in ("clip_l", "clip_g") if getattr(clip, slot) is not None
            for key, _ in getattr(clip, slot).named_parameters()]
    return clip.with_weight_patches(scaled_projections(clip.weight_patches, keys, factors))
