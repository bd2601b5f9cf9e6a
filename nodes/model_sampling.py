"""The noise schedule side of sampling: scheduler nodes and SIGMAS tools.

Scheduler nodes make SIGMAS (1-D float32 tensors, highest sigma first, usually ending in
0) from a MODEL's schedule or from explicit ranges; the sigma tools split, flip and
extend them. The math is in :mod:`diffusion.sampling.schedulers` and
:mod:`diffusion.sampling.sigma_tools`.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import REQUIRED, Input, Model, OneOf, Output, Range, Sigmas, node
from .sampling import _model, _schedulers

_STEPS = Range(1, 10000)
_DENOISE = Range(0.0, 1.0, step=0.01)
_SIGMA = Range(0.0, 5000.0, step=0.01, round=False)
_VALUE = Range(0.0, 100.0, step=0.01, round=False)
#: SD1's sigma range, the default of the range-based schedulers (ComfyUI's rounding of it).
_SIGMA_MAX, _SIGMA_MIN = 14.614642, 0.0291675
_SigmasOut = Annotated[Sigmas, Output("SIGMAS")]
_Split = tuple[Annotated[Sigmas, Output("high_sigmas")], Annotated[Sigmas, Output("low_sigmas")]]


@node(category="sampling/custom_sampling/schedulers", display_name="BasicScheduler")
def BasicScheduler(
    model: Model,
    scheduler: Annotated[str, OneOf(_schedulers)],
    steps: Annotated[int, _STEPS] = 20,
    denoise: Annotated[float, _DENOISE] = 1.0,
) -> _SigmasOut:
    """The sigmas of one of KSampler's schedulers for the model; denoise < 1 keeps the last steps of a longer run."""
    from diffusion.sampling.sigma_tools import basic_scheduler_sigmas

    return basic_scheduler_sigmas(_model(model).schedule, scheduler, steps, denoise)


@node(category="sampling/custom_sampling/schedulers", display_name="KarrasScheduler")
def KarrasScheduler(
    steps: Annotated[int, _STEPS] = 20,
    sigma_max: Annotated[float, _SIGMA] = _SIGMA_MAX,
    sigma_min: Annotated[float, _SIGMA] = _SIGMA_MIN,
    rho: Annotated[float, _VALUE] = 7.0,
) -> _SigmasOut:
    """Karras et al.'s schedule over an explicit sigma range."""
    from diffusion.sampling.schedulers import karras_schedule

    return karras_schedule(steps, sigma_min, sigma_max, rho)


@node(category="sampling/custom_sampling/schedulers", display_name="ExponentialScheduler")
def ExponentialScheduler(
    steps: Annotated[int, _STEPS] = 20,
    sigma_max: Annotated[float, _SIGMA] = _SIGMA_MAX,
    sigma_min: Annotated[float, _SIGMA] = _SIGMA_MIN,
) -> _SigmasOut:
    """Sigmas evenly spaced in log sigma over an explicit range."""
    from diffusion.sampling.schedulers import exponential_schedule

    return exponential_schedule(steps, sigma_min, sigma_max)


@node(category="sampling/custom_sampling/schedulers", display_name="PolyexponentialScheduler")
def PolyexponentialScheduler(
    steps: Annotated[int, _STEPS] = 20,
    sigma_max: Annotated[float, _SIGMA] = _SIGMA_MAX,
    sigma_min: Annotated[float, _SIGMA] = _SIGMA_MIN,
    rho: Annotated[float, _VALUE] = 1.0,
) -> _SigmasOut:
    """Log sigma following a power ``rho`` of the step fraction (1 = exponential)."""
    from diffusion.sampling.sigma_tools import polyexponential_schedule

    return polyexponential_schedule(steps, sigma_min, sigma_max, rho)


@node(category="sampling/custom_sampling/schedulers", display_name="LaplaceScheduler")
def LaplaceScheduler(
    steps: Annotated[int, _STEPS] = 20,
    sigma_max: Annotated[float, _SIGMA] = _SIGMA_MAX,
    sigma_min: Annotated[float, _SIGMA] = _SIGMA_MIN,
    mu: Annotated[float, Range(-10.0, 10.0, step=0.1, round=False)] = 0.0,
    beta: Annotated[float, Range(0.0, 10.0, step=0.1, round=False)] = 0.5,
) -> _SigmasOut:
    """Steps concentrated around log sigma ``mu`` by a Laplace distribution of scale ``beta``."""
    from diffusion.sampling.sigma_tools import laplace_schedule

    return laplace_schedule(steps, sigma_min, sigma_max, mu, beta)


@node(category="sampling/custom_sampling/schedulers", display_name="VPScheduler")
def VPScheduler(
    steps: Annotated[int, _STEPS] = 20,
    beta_d: Annotated[float, _SIGMA] = 19.9,
    beta_min: Annotated[float, _SIGMA] = 0.1,
    eps_s: Annotated[float, Range(0.0, 1.0, step=0.0001, round=False)] = 0.001,
) -> _SigmasOut:
    """The continuous variance-preserving SDE's schedule."""
    from diffusion.sampling.sigma_tools import vp_schedule

    return vp_schedule(steps, beta_d, beta_min, eps_s)


@node(category="sampling/custom_sampling/schedulers", display_name="BetaSamplingScheduler")
def BetaSamplingScheduler(
    model: Model,
    steps: Annotated[int, _STEPS] = 20,
    alpha: Annotated[float, Range(0.0, 50.0, step=0.01, round=False)] = 0.6,
    beta: Annotated[float, Range(0.0, 50.0, step=0.01, round=False)] = 0.6,
) -> _SigmasOut:
    """Timesteps placed by the quantiles of a Beta(alpha, beta) distribution."""
    from diffusion.sampling.schedulers import beta_schedule

    return beta_schedule(_model(model).schedule, steps, alpha, beta)


@node(category="sampling/custom_sampling/schedulers", display_name="SDTurboScheduler")
def SDTurboScheduler(
    model: Model,
    steps: Annotated[int, Range(1, 10)] = 1,
    denoise: Annotated[float, Range(0, 1.0, step=0.01)] = 1.0,
) -> _SigmasOut:
    """SD-Turbo / SDXL-Turbo's schedule: timesteps 999, 899, ... (one to ten steps)."""
    from diffusion.sampling.sigma_tools import sd_turbo_schedule

    return sd_turbo_schedule(_model(model).schedule, steps, denoise)


@node(category="sampling/custom_sampling/schedulers")
def AlignYourStepsScheduler(
    model_type: Annotated[str, OneOf(("SD1", "SDXL", "SVD"), v3=True)],
    steps: Annotated[int, _STEPS] = 10,
    denoise: Annotated[float, _DENOISE] = 1.0,
) -> _SigmasOut:
    """NVIDIA's Align Your Steps noise levels, interpolated to the number of steps."""
    from diffusion.sampling.sigma_tools import align_your_steps_schedule

    return align_your_steps_schedule(model_type, steps, denoise)


@node(category="sampling/custom_sampling/schedulers")
def GITSScheduler(
    coeff: Annotated[float, Range(0.80, 1.50, step=0.05)] = 1.20,
    steps: Annotated[int, Range(2, 1000)] = 10,
    denoise: Annotated[float, _DENOISE] = 1.0,
) -> _SigmasOut:
    """Chen et al.'s GITS noise levels for a coefficient and step count (interpolated beyond 20 steps)."""
    from diffusion.sampling.gits import gits_schedule

    return gits_schedule(coeff, steps, denoise)


@node(category="sampling/custom_sampling/sigmas", display_name="SplitSigmas")
def SplitSigmas(sigmas: Sigmas, step: Annotated[int, Range(0, 10000)] = 0) -> _Split:
    """Splits at a step: the high part ends and the low part starts with that step's sigma."""
    from diffusion.sampling.sigma_tools import split_sigmas

    return split_sigmas(sigmas, step)


@node(category="sampling/custom_sampling/sigmas", display_name="SplitSigmasDenoise")
def SplitSigmasDenoise(sigmas: Sigmas, denoise: Annotated[float, _DENOISE] = 1.0) -> _Split:
    """Splits so that the low part holds the given fraction of the steps."""
    from diffusion.sampling.sigma_tools import split_sigmas_denoise

    return split_sigmas_denoise(sigmas, denoise)


@node(category="sampling/custom_sampling/sigmas", display_name="FlipSigmas")
def FlipSigmas(sigmas: Sigmas) -> _SigmasOut:
    """Reverses the schedule (for unsampling); a first sigma of 0 becomes 0.0001."""
    from diffusion.sampling.sigma_tools import flip_sigmas

    return flip_sigmas(sigmas.clone())


@node(category="sampling/custom_sampling/sigmas", display_name="SetFirstSigma")
def SetFirstSigma(sigmas: Sigmas,
                  sigma: Annotated[float, Range(0.0, 20000.0, step=0.001, round=False)] = 136.0) -> _SigmasOut:
    """Replaces the first sigma."""
    from diffusion.sampling.sigma_tools import set_first_sigma

    return set_first_sigma(sigmas, sigma)


@node(category="sampling/custom_sampling/sigmas", display_name="ExtendIntermediateSigmas")
def ExtendIntermediateSigmas(
    sigmas: Sigmas,
    steps: Annotated[int, Range(1, 100)] = 2,
    start_at_sigma: Annotated[float, Range(-1.0, 20000.0, step=0.01, round=False)] = -1.0,
    end_at_sigma: Annotated[float, Range(0.0, 20000.0, step=0.01, round=False)] = 12.0,
    spacing: Annotated[str, OneOf(("linear", "cosine", "sine"))] = REQUIRED,
) -> _SigmasOut:
    """Splits each step between the two sigmas into ``steps`` smaller ones (-1: no upper limit)."""
    from diffusion.sampling.sigma_tools import extend_intermediate_sigmas

    return extend_intermediate_sigmas(sigmas, steps, start_at_sigma, end_at_sigma, spacing)  # type: ignore[arg-type]


@node(category="sampling/custom_sampling/sigmas", display_name="SamplingPercentToSigma")
def SamplingPercentToSigma(
    model: Annotated[Model, Input()],
    sampling_percent: Annotated[float, Range(0.0, 1.0, step=0.0001)] = 0.0,
    return_actual_sigma: bool = False,
) -> Annotated[float, Output("sigma_value")]:
    """The model's sigma at a fraction of sampling; at 0% and 100% a sentinel unless the actual sigma is asked for."""
    schedule = _model(model).schedule
    if return_actual_sigma:
        if sampling_percent <= 0.0:
            return float(schedule.sigma_max)
        if sampling_percent >= 1.0:
            return float(schedule.sigma_min)
    return float(schedule.percent_to_sigma(sampling_percent))


_SAMPLING_TYPES = ("eps", "v_prediction", "lcm", "x0", "img_to_img")
_PREDICTIONS = {"eps": "eps", "v_prediction": "v", "x0": "x0"}


@node(category="advanced/model", display_name="ModelSamplingDiscrete")
def ModelSamplingDiscrete(
    model: Model,
    sampling: Annotated[str, OneOf(_SAMPLING_TYPES)],
    zsnr: bool = False,
) -> Annotated[Model, Output("MODEL")]:
    """Samples the model as another type (eps, v, x0, LCM's distilled 50 timesteps, img_to_img), optionally
    on a zero-terminal-SNR schedule."""
    from diffusion.sampling import DiscreteSchedule
    from diffusion.sampling.discrete_variants import ImageToImageSchedule, LCMSchedule

    patched = _model(model).clone()
    if sampling == "lcm":
        patched.schedule = LCMSchedule(zsnr=zsnr)
    elif sampling == "img_to_img":
        patched.schedule = ImageToImageSchedule(zsnr=zsnr)
    elif sampling in _PREDICTIONS:
        patched.schedule = DiscreteSchedule(prediction=_PREDICTIONS[sampling], zsnr=zsnr)  # type: ignore[arg-type]
    else:
        raise ValueError(f"ModelSamplingDiscrete: unknown sampling {sampling!r} (expected one of "
                         f"{', '.join(_SAMPLING_TYPES)})")
    return patched


_EDM_SAMPLING = ("v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow")
_EDM_SUPPORTED = {"v_prediction": ("v", 1.0), "edm": ("edm", 0.5), "eps": ("eps", 1.0)}
SigmaBound = Annotated[float, Range(0.0, 1000.0, step=0.001, round=False)]


def _continuous(model: Any, kind: str, sampling: str, sigma_max: float, sigma_min: float, node_name: str) -> Any:
    from diffusion.sampling.continuous import ContinuousSchedule

    if sampling not in _EDM_SUPPORTED:
        raise ValueError(f"{node_name}: sampling {sampling!r} is not supported yet "
                         f"(supported: {', '.join(_EDM_SUPPORTED)})")
    prediction, sigma_data = _EDM_SUPPORTED[sampling]
    patched = _model(model).clone()
    patched.schedule = ContinuousSchedule(sigma_min, sigma_max, kind, prediction, sigma_data)  # type: ignore[arg-type]
    return patched


@node(category="advanced/model", display_name="ModelSamplingContinuousEDM")
def ModelSamplingContinuousEDM(
    model: Model,
    sampling: Annotated[str, OneOf(_EDM_SAMPLING)],
    sigma_max: SigmaBound = 120.0,
    sigma_min: SigmaBound = 0.002,
) -> Annotated[Model, Output("MODEL")]:
    """Samples the model on a continuous EDM sigma range (CosXL, EDM-trained fine-tunes)."""
    return _continuous(model, "edm", sampling, sigma_max, sigma_min, "ModelSamplingContinuousEDM")


@node(category="advanced/model", display_name="ModelSamplingContinuousV")
def ModelSamplingContinuousV(
    model: Model,
    sampling: Annotated[str, OneOf(("v_prediction",))],
    sigma_max: SigmaBound = 500.0,
    sigma_min: SigmaBound = 0.03,
) -> Annotated[Model, Output("MODEL")]:
    """Samples a v-prediction model on a continuous sigma range (timestep = atan(sigma) * 2 / pi)."""
    return _continuous(model, "v", sampling, sigma_max, sigma_min, "ModelSamplingContinuousV")


_COMPUTE_DTYPES = ("default", "fp32", "fp16", "bf16")


@node(category="advanced/debug/model", display_name="ModelComputeDtype")
def ModelComputeDtype(model: Model, dtype: Annotated[str, OneOf(_COMPUTE_DTYPES)]) -> Annotated[Model, Output("MODEL")]:
    """Runs the model's UNet calls in another precision (weights are cast per call; ``default`` keeps it)."""
    from diffusion.patching import set_model_option

    patched = _model(model).clone()
    set_model_option(patched.options, "compute_dtype", None if dtype == "default" else dtype)
    return patched


@node(category="_for_testing")
def TorchCompileModel(model: Model, backend: Annotated[str, OneOf(("inductor", "cudagraphs"), v3=True)] = REQUIRED,
                      ) -> Annotated[Model, Output("MODEL")]:
    """Marks the model to run its UNet through torch.compile (a no-op with a warning where compiling is unavailable)."""
    import logging

    import torch

    patched = _model(model).clone()
    if not hasattr(torch, "compile") or (backend == "cudagraphs" and not torch.cuda.is_available()):
        logging.getLogger(__name__).warning("TorchCompileModel: backend %s is not available here; the model runs "
                                            "uncompiled", backend)
        return patched
    patched.options["torch_compile_backend"] = backend
    return patched
