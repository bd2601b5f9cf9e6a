"""Sampler nodes: KSampler and KSamplerAdvanced, with ComfyUI's inputs, defaults and tooltips.

Both run :func:`diffusion.ksampler.ksample`. Progress is reported per step with
``ctx.progress(step + 1, total, preview)`` (an interrupted run raises there and the
sampler stops). The preview is a latent2rgb image of the step's denoised latent, sent
unless the prompt's ``extra_data["preview_method"]`` is ``"none"``: absent or
``"default"`` means our server default, which is previews on (ComfyUI's default is off);
``"taesd"`` falls back to latent2rgb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from .api import (
    REQUIRED,
    Conditioning,
    Context,
    Latent,
    Model,
    OneOf,
    Output,
    Range,
    Seed,
    Tooltip,
    node,
)


def _samplers() -> Sequence[str]:
    """The sampler combo: ``diffusion.sampling.SAMPLER_NAMES``, imported when first asked for (it pulls in
    scipy and torchsde, seconds that building a registry should not pay)."""
    from diffusion.sampling import SAMPLER_NAMES

    return SAMPLER_NAMES


def _schedulers() -> Sequence[str]:
    """The scheduler combo: ``diffusion.sampling.SCHEDULER_NAMES``, imported when first asked for."""
    from diffusion.sampling import SCHEDULER_NAMES

    return SCHEDULER_NAMES


_ON_OFF = ("enable", "disable")
_OFF_ON = ("disable", "enable")


def _progress(ctx: Context, model: Any) -> Any:
    """The per-step callback: progress, plus a preview when the prompt wants them."""
    from nodes.previews import previewer

    preview_of = previewer(ctx, model)

    def callback(step: int, total: int, denoised: Any) -> None:
        ctx.progress(step + 1, total, preview_of(denoised) if preview_of is not None else None)

    return callback


def _model(model: Any) -> Any:
    """The MODEL input, or ComfyUI-style error when a loader gave none."""
    if model is None:
        raise RuntimeError("ERROR: model input is invalid: None\n\nIf the model is from a checkpoint loader node "
                           "your checkpoint does not contain a valid diffusion model.")
    return model


@node(category="sampling", display_name="KSampler")
def KSampler(
    model: Annotated[Model, Tooltip("The model used for denoising the input latent.")],
    seed: Annotated[int, Seed(), Tooltip("The random seed used for creating the noise.")],
    steps: Annotated[int, Range(1, 10000), Tooltip("The number of steps used in the denoising process.")] = 20,
    cfg: Annotated[float, Range(0.0, 100.0, step=0.1, round=0.01),
                   Tooltip("The Classifier-Free Guidance scale balances creativity and adherence to the prompt. "
                           "Higher values result in images more closely matching the prompt however too high "
                           "values will negatively impact quality.")] = 8.0,
    sampler_name: Annotated[str, OneOf(_samplers),
                            Tooltip("The algorithm used when sampling, this can affect the quality, speed, and "
                                    "style of the generated output.")] = REQUIRED,
    scheduler: Annotated[str, OneOf(_schedulers),
                         Tooltip("The scheduler controls how noise is gradually removed to form the image.")
                         ] = REQUIRED,
    positive: Annotated[Conditioning, Tooltip("The conditioning describing the attributes you want to include "
                                              "in the image.")] = REQUIRED,
    negative: Annotated[Conditioning, Tooltip("The conditioning describing the attributes you want to exclude "
                                              "from the image.")] = REQUIRED,
    latent_image: Annotated[Latent, Tooltip("The latent image to denoise.")] = REQUIRED,
    denoise: Annotated[float, Range(0.0, 1.0, step=0.01),
                       Tooltip("The amount of denoising applied, lower values will maintain the structure of the "
                               "initial image allowing for image to image sampling.")] = 1.0,
    *,
    ctx: Context,
) -> Annotated[Latent, Output(tooltip="The denoised latent.")]:
    """Uses the provided model, positive and negative conditioning to denoise the latent image."""
    from diffusion.ksampler import ksample

    model = _model(model)
    return ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                   denoise=denoise, callback=_progress(ctx, model))


@node(category="sampling", display_name="KSampler (Advanced)", description="")
def KSamplerAdvanced(
    model: Model,
    add_noise: Annotated[str, OneOf(_ON_OFF)],
    noise_seed: Annotated[int, Seed()],
    steps: Annotated[int, Range(1, 10000)] = 20,
    cfg: Annotated[float, Range(0.0, 100.0, step=0.1, round=0.01)] = 8.0,
    sampler_name: Annotated[str, OneOf(_samplers)] = REQUIRED,
    scheduler: Annotated[str, OneOf(_schedulers)] = REQUIRED,
    positive: Conditioning = REQUIRED,
    negative: Conditioning = REQUIRED,
    latent_image: Latent = REQUIRED,
    start_at_step: Annotated[int, Range(0, 10000)] = 0,
    end_at_step: Annotated[int, Range(0, 10000)] = 10000,
    return_with_leftover_noise: Annotated[str, OneOf(_OFF_ON)] = REQUIRED,
    *,
    ctx: Context,
) -> Latent:
    """Samples a window of steps (start_at_step..end_at_step), optionally without adding noise or
    leaving the remaining noise in (for base -> refiner chains)."""
    from diffusion.ksampler import ksample

    model = _model(model)
    return ksample(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                   denoise=1.0, add_noise=add_noise != "disable", start_step=start_at_step,
                   last_step=end_at_step, force_full_denoise=return_with_leftover_noise != "enable",
                   callback=_progress(ctx, model))
