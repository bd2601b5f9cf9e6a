"""Guidance patch nodes: each returns a clone of the MODEL with one CFG hook added to its ``options``.

The hooks (:mod:`diffusion.guidance.patches`) run in the sampler as ComfyUI's do
(:func:`diffusion.sampling.cfg.guide`): pre-CFG hooks change the two predictions, the
CFG function replaces the formula, post-CFG hooks change the result. Several patches on
one model run in the order they were applied; the MODEL given is never changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Conditioning, Input, Model, Output, Range, node
from .sampling import _model

_Patched = Annotated[Model, Output("patched_model")]
_ModelOut = Annotated[Model, Output("MODEL")]


def _with_hook(model: Any, kind: str, hook: Any) -> Any:
    """A clone of ``model`` with ``hook`` set (``sampler_cfg_function``) or appended (pre/post lists)."""
    from diffusion.patching import append_model_option, set_model_option

    patched = _model(model).clone()
    if kind == "sampler_cfg_function":
        set_model_option(patched.options, kind, hook)
    else:
        append_model_option(patched.options, kind, hook)
    return patched


@node(category="advanced/model", display_name="RescaleCFG")
def RescaleCFG(model: Model, multiplier: Annotated[float, Range(0.0, 1.0, step=0.01)] = 0.7) -> _ModelOut:
    """Rescales CFG towards the positive prediction's spread (less over-saturation at high cfg)."""
    from diffusion.guidance.patches import rescale_cfg

    return _with_hook(model, "sampler_cfg_function", rescale_cfg(multiplier))


@node(category="advanced/guidance")
def CFGZeroStar(model: Annotated[Model, Input()]) -> _Patched:
    """CFG-Zero*: scales the negative prediction by its optimal projection onto the positive."""
    from diffusion.guidance.patches import cfg_zero_star

    return _with_hook(model, "sampler_post_cfg_function", cfg_zero_star())


@node(category="advanced/guidance")
def CFGNorm(model: Annotated[Model, Input()],
            strength: Annotated[float, Range(0.0, 100.0, step=0.01)] = 1.0) -> _Patched:
    """Caps the guided prediction's norm at the positive prediction's (times strength)."""
    from diffusion.guidance.patches import cfg_norm

    return _with_hook(model, "sampler_post_cfg_function", cfg_norm(strength))


@node(category="_for_testing",
      display_name="Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)")
def Mahiro(model: Annotated[Model, Input()]) -> _Patched:
    """Mahiro guidance: leans towards the scaled positive where the negative disagrees with it."""
    from diffusion.guidance.patches import mahiro

    return _with_hook(model, "sampler_post_cfg_function", mahiro())


@node("Epsilon Scaling", category="model_patches/unet")
def EpsilonScaling(
    model: Annotated[Model, Input()],
    scaling_factor: Annotated[float, Range(0.5, 1.5, step=0.001, display="number")] = 1.005,
) -> _ModelOut:
    """Divides the predicted noise by the factor at every step (against exposure bias)."""
    from diffusion.guidance.patches import epsilon_scaling

    return _with_hook(model, "sampler_post_cfg_function", epsilon_scaling(scaling_factor))


@node(category="advanced/guidance", display_name="Tangential Damping CFG")
def TCFG(model: Annotated[Model, Input()]) -> _Patched:
    """Tangential damping CFG: keeps the negative prediction's part along the main shared direction only."""
    from diffusion.guidance.patches import tangential_damping

    return _with_hook(model, "sampler_pre_cfg_function", tangential_damping())


@node(category="sampling/custom_sampling", display_name="Adaptive Projected Guidance")
def APG(
    model: Annotated[Model, Input()],
    eta: Annotated[float, Range(-10.0, 10.0, step=0.01)] = 1.0,
    norm_threshold: Annotated[float, Range(0.0, 50.0, step=0.1)] = 5.0,
    momentum: Annotated[float, Range(-5.0, 1.0, step=0.01)] = 0.0,
) -> _ModelOut:
    """Adaptive projected guidance: damps the guidance's part parallel to the positive prediction."""
    from diffusion.guidance.patches import adaptive_projected_guidance

    return _with_hook(model, "sampler_pre_cfg_function", adaptive_projected_guidance(eta, norm_threshold, momentum))


@node(category="_for_testing", display_name="FreSca")
def FreSca(
    model: Annotated[Model, Input()],
    scale_low: Annotated[float, Range(0, 10, step=0.01)] = 1.0,
    scale_high: Annotated[float, Range(0, 10, step=0.01)] = 1.25,
    freq_cutoff: Annotated[int, Range(1, 10000, step=1)] = 20,
) -> _ModelOut:
    """Scales the guidance's low and high spatial frequencies separately."""
    from diffusion.guidance.patches import fresca

    return _with_hook(model, "sampler_pre_cfg_function", fresca(scale_low, scale_high, freq_cutoff))


@node(category="_for_testing", display_name="Differential Diffusion")
def DifferentialDiffusion(
    model: Annotated[Model, Input()],
    strength: Annotated[float, Range(0.0, 1.0, step=0.01), Input(optional=True)] = 1.0,
) -> _ModelOut:
    """Inpaints with a soft mask as a schedule: each step changes only where the mask exceeds its progress."""
    from diffusion.guidance.patches import differential_diffusion
    from diffusion.patching import set_model_option

    patched = _model(model).clone()
    set_model_option(patched.options, "denoise_mask_function", differential_diffusion(strength))
    return patched


@node(category="advanced/conditioning", display_name="ConditioningSetTimestepRange")
def ConditioningSetTimestepRange(
    conditioning: Conditioning,
    start: Annotated[float, Range(0.0, 1.0, step=0.001)] = 0.0,
    end: Annotated[float, Range(0.0, 1.0, step=0.001)] = 1.0,
) -> Annotated[Conditioning, Output("CONDITIONING")]:
    """Applies the conditioning only between two fractions of the sampling (0 = first step, 1 = last)."""
    from diffusion.conditioning import set_values

    return set_values(conditioning, {"start_percent": start, "end_percent": end})


@node(category="_for_testing", display_name="Perp-Neg (DEPRECATED by PerpNegGuider)", deprecated=True,
      experimental=True, python_module="comfy_extras.nodes_perpneg")
def PerpNeg(model: Model, empty_conditioning: Conditioning,
            neg_scale: Annotated[float, Range(0.0, 100.0, step=0.01)] = 1.0) -> Model:
    """Perp-Neg as a CFG function on the model (the older form of PerpNegGuider): one more pass per step on the empty
    prompt, and only the part of the negative perpendicular to the positive pushes the result."""
    from diffusion.denoiser import Denoiser
    from diffusion.guidance.guiders import perp_neg
    from diffusion.patching import set_model_option

    def cfg_function(args: dict[str, Any]) -> Any:
        x, sigma = args["input"], args["sigma"]
        empty = Denoiser(args["model"], empty_conditioning, [], 1.0, x.shape).predict(
            x, sigma, [0], args["model_options"])[0]
        return x - perp_neg(x, args["cond_denoised"], args["uncond_denoised"], empty, neg_scale, args["cond_scale"])

    patched = model.clone()
    set_model_option(patched.options, "sampler_cfg_function", cfg_function)
    return patched
