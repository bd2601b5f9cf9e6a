"""Custom sampling nodes: SamplerCustom(Advanced), NOISE, GUIDER and SAMPLER values.

Sampling is built from parts here: a NOISE (the initial noise), a GUIDER (model plus
conditioning and guidance), a SAMPLER (an algorithm with its options) and SIGMAS (the
schedule, from the scheduler nodes of :mod:`nodes.model_sampling`). The values are
immutable (``diffusion.sampling.custom``, ``diffusion.guidance``), so they flow and cache
like any other. The work is in :func:`diffusion.guidance.sample_with_guider`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from .api import (
    REQUIRED,
    Conditioning,
    Context,
    Guider,
    Input,
    Latent,
    Model,
    Noise,
    OneOf,
    Output,
    Range,
    Sampler,
    Seed,
    Sigmas,
    node,
)
from .sampling import _model, _progress, _samplers

if TYPE_CHECKING:
    from diffusion.sampling.custom import SamplerChoice

_NOISE_DEVICES = ("gpu", "cpu")
_CFG = Range(0.0, 100.0, step=0.1, round=0.01)
_ETA = Range(0.0, 100.0, step=0.01, round=False)
_ER_SDE_TYPES = ("ER-SDE", "Reverse-time SDE", "ODE")
_SamplerOut = Annotated[Sampler, Output("SAMPLER")]
_Outputs = tuple[Annotated[Latent, Output("output")], Annotated[Latent, Output("denoised_output")]]


def _choice(name: str, **options: Any) -> SamplerChoice:
    from diffusion.sampling.custom import SamplerChoice

    return SamplerChoice(name, options)


def _run(ctx: Context, guider: Any, noise: Any, sampler: Any, sigmas: Any, latent: Any) -> tuple[Any, Any]:
    """Sample with reports of progress and previews, as KSampler does."""
    from diffusion.guidance import sample_with_guider

    if guider is None:
        raise ValueError("no guider: connect a GUIDER (CFGGuider, BasicGuider, ...)")
    model = _model(guider.model)
    return sample_with_guider(guider, noise, sampler, sigmas, latent, callback=_progress(ctx, model))


@node(category="sampling/custom_sampling", display_name="SamplerCustom")
def SamplerCustom(
    model: Model,
    add_noise: bool = True,
    noise_seed: Annotated[int, Seed()] = 0,
    cfg: Annotated[float, _CFG] = 8.0,
    positive: Conditioning = REQUIRED,
    negative: Conditioning = REQUIRED,
    sampler: Sampler = REQUIRED,
    sigmas: Sigmas = REQUIRED,
    latent_image: Latent = REQUIRED,
    *,
    ctx: Context,
) -> _Outputs:
    """Samples with CFG along the given sigmas with the given sampler; also returns the last denoised prediction."""
    from diffusion.guidance import CFGGuider
    from diffusion.sampling.custom import DisableNoise, RandomNoise

    noise = RandomNoise(noise_seed) if add_noise else DisableNoise(noise_seed)
    return _run(ctx, CFGGuider(_model(model), positive, negative, cfg), noise, sampler, sigmas, latent_image)


@node(category="sampling/custom_sampling", display_name="SamplerCustomAdvanced")
def SamplerCustomAdvanced(
    noise: Noise,
    guider: Guider,
    sampler: Sampler,
    sigmas: Sigmas,
    latent_image: Latent,
    *,
    ctx: Context,
) -> _Outputs:
    """Samples a latent from a noise, a guider, a sampler and sigmas; also returns the last denoised prediction."""
    return _run(ctx, guider, noise, sampler, sigmas, latent_image)


@node(category="sampling/custom_sampling/noise", display_name="RandomNoise")
def RandomNoise(noise_seed: Annotated[int, Seed()] = 0) -> Annotated[Noise, Output("NOISE")]:
    """Seeded Gaussian noise, the same KSampler draws for that seed."""
    from diffusion.sampling.custom import RandomNoise as Random

    return Random(noise_seed)


@node(category="sampling/custom_sampling/noise", display_name="DisableNoise")
def DisableNoise() -> Annotated[Noise, Output("NOISE")]:
    """No initial noise, for latents that already hold it."""
    from diffusion.sampling.custom import DisableNoise as Disabled

    return Disabled()


@node(category="_for_testing/custom_sampling/noise", display_name="AddNoise")
def AddNoise(model: Model, noise: Noise, sigmas: Sigmas, latent_image: Latent) -> Annotated[Latent, Output("LATENT")]:
    """Adds the noise to the latent at the level of the sigmas' span (first minus last)."""
    from diffusion.guidance.noising import add_noise

    return add_noise(_model(model), noise, sigmas, latent_image)


@node(category="sampling/custom_sampling/guiders", display_name="BasicGuider")
def BasicGuider(model: Model, conditioning: Conditioning) -> Annotated[Guider, Output("GUIDER")]:
    """Guides with the conditioning alone (no negative, cfg 1)."""
    from diffusion.guidance import BasicGuider as Basic

    return Basic(_model(model), conditioning)


@node(category="sampling/custom_sampling/guiders", display_name="CFGGuider")
def CFGGuider(model: Model, positive: Conditioning, negative: Conditioning,
              cfg: Annotated[float, _CFG] = 8.0) -> Annotated[Guider, Output("GUIDER")]:
    """Classifier-free guidance between the positive and negative conditioning."""
    from diffusion.guidance import CFGGuider as Cfg

    return Cfg(_model(model), positive, negative, cfg)


@node(category="sampling/custom_sampling/guiders", display_name="DualCFGGuider")
def DualCFGGuider(
    model: Model,
    cond1: Conditioning,
    cond2: Conditioning,
    negative: Conditioning,
    cfg_conds: Annotated[float, _CFG] = 8.0,
    cfg_cond2_negative: Annotated[float, _CFG] = 8.0,
    style: Annotated[str, OneOf(("regular", "nested"))] = REQUIRED,
) -> Annotated[Guider, Output("GUIDER")]:
    """Guidance with two scales: cond1 over cond2, and cond2 over the negative ("nested" wraps one in the other)."""
    from diffusion.guidance import DualCFGGuider as Dual

    return Dual(_model(model), cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style == "nested")


@node(category="_for_testing", display_name="PerpNegGuider")
def PerpNegGuider(
    model: Annotated[Model, Input()],
    positive: Annotated[Conditioning, Input()],
    negative: Annotated[Conditioning, Input()],
    empty_conditioning: Annotated[Conditioning, Input()],
    cfg: Annotated[float, _CFG] = 8.0,
    neg_scale: Annotated[float, Range(0.0, 100.0, step=0.01)] = 1.0,
) -> Annotated[Guider, Output("GUIDER")]:
    """CFG that only pushes away from the part of the negative unrelated to the positive (Perp-Neg)."""
    from diffusion.guidance import PerpNegGuider as Perp

    return Perp(_model(model), positive, negative, empty_conditioning, cfg, neg_scale)


@node(category="sampling/custom_sampling/samplers", display_name="KSamplerSelect")
def KSamplerSelect(sampler_name: Annotated[str, OneOf(_samplers)]) -> _SamplerOut:
    """One of KSampler's samplers by name, with its default options."""
    return _choice(sampler_name)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerEulerAncestral")
def SamplerEulerAncestral(eta: Annotated[float, _ETA] = 1.0, s_noise: Annotated[float, _ETA] = 1.0) -> _SamplerOut:
    """Euler ancestral with its noise amount (eta) and noise scale."""
    return _choice("euler_ancestral", eta=eta, s_noise=s_noise)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerEulerAncestralCFG++")
def SamplerEulerAncestralCFGPP(
    eta: Annotated[float, Range(0.0, 1.0, step=0.01, round=False)] = 1.0,
    s_noise: Annotated[float, Range(0.0, 10.0, step=0.01, round=False)] = 1.0,
) -> _SamplerOut:
    """Euler ancestral with the CFG++ step (use a low cfg, about 1 to 2)."""
    return _choice("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise)


@node(category="_for_testing", display_name="SamplerEulerCFG++")
def SamplerEulerCFGpp(version: Annotated[str, OneOf(("regular", "alternative"), v3=True)]) -> _SamplerOut:
    """Euler with the CFG++ step; "alternative" is the older variant that steps on a shifted slope."""
    from diffusion.sampling.custom import SamplerChoice
    from diffusion.sampling.samplers.cfg_pp import sample_euler_cfg_pp_alternative

    if version == "alternative":
        return SamplerChoice("euler_cfg_pp", function=sample_euler_cfg_pp_alternative)
    return _choice("euler_cfg_pp")


@node(category="sampling/custom_sampling/samplers", display_name="SamplerLMS")
def SamplerLMS(order: Annotated[int, Range(1, 100)] = 4) -> _SamplerOut:
    """Linear multistep with up to ``order`` past slopes."""
    return _choice("lms", order=order)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerDPMPP_2M_SDE")
def SamplerDPMPP_2M_SDE(
    solver_type: Annotated[str, OneOf(("midpoint", "heun"))],
    eta: Annotated[float, _ETA] = 1.0,
    s_noise: Annotated[float, _ETA] = 1.0,
    noise_device: Annotated[str, OneOf(_NOISE_DEVICES)] = REQUIRED,
) -> _SamplerOut:
    """DPM-Solver++(2M) SDE with its correction type and noise options."""
    name = "dpmpp_2m_sde" if noise_device == "cpu" else "dpmpp_2m_sde_gpu"
    return _choice(name, eta=eta, s_noise=s_noise, solver_type=solver_type)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerDPMPP_3M_SDE")
def SamplerDPMPP_3M_SDE(
    eta: Annotated[float, _ETA] = 1.0,
    s_noise: Annotated[float, _ETA] = 1.0,
    noise_device: Annotated[str, OneOf(_NOISE_DEVICES)] = REQUIRED,
) -> _SamplerOut:
    """DPM-Solver++(3M) SDE with its noise options."""
    return _choice("dpmpp_3m_sde" if noise_device == "cpu" else "dpmpp_3m_sde_gpu", eta=eta, s_noise=s_noise)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerDPMPP_SDE")
def SamplerDPMPP_SDE(
    eta: Annotated[float, _ETA] = 1.0,
    s_noise: Annotated[float, _ETA] = 1.0,
    r: Annotated[float, _ETA] = 0.5,
    noise_device: Annotated[str, OneOf(_NOISE_DEVICES)] = REQUIRED,
) -> _SamplerOut:
    """DPM-Solver++ SDE with its noise options and sub-step position ``r``."""
    return _choice("dpmpp_sde" if noise_device == "cpu" else "dpmpp_sde_gpu", eta=eta, s_noise=s_noise, r=r)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerDPMPP_2S_Ancestral")
def SamplerDPMPP_2S_Ancestral(eta: Annotated[float, _ETA] = 1.0,
                              s_noise: Annotated[float, _ETA] = 1.0) -> _SamplerOut:
    """DPM-Solver++(2S) ancestral with its noise options."""
    return _choice("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerDPMAdaptative")
def SamplerDPMAdaptative(
    order: Annotated[int, Range(2, 3)] = 3,
    rtol: Annotated[float, _ETA] = 0.05,
    atol: Annotated[float, _ETA] = 0.0078,
    h_init: Annotated[float, _ETA] = 0.05,
    pcoeff: Annotated[float, _ETA] = 0.0,
    icoeff: Annotated[float, _ETA] = 1.0,
    dcoeff: Annotated[float, _ETA] = 0.0,
    accept_safety: Annotated[float, _ETA] = 0.81,
    eta: Annotated[float, _ETA] = 0.0,
    s_noise: Annotated[float, _ETA] = 1.0,
) -> _SamplerOut:
    """Adaptive DPM-Solver with its error tolerances and step-size controller."""
    return _choice("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff, icoeff=icoeff,
                   dcoeff=dcoeff, accept_safety=accept_safety, eta=eta, s_noise=s_noise)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerER_SDE")
def SamplerER_SDE(
    solver_type: Annotated[str, OneOf(None), Input(options=list(_ER_SDE_TYPES))],
    max_stage: Annotated[int, Range(1, 3)] = 3,
    eta: Annotated[float, _ETA] = 1.0,
    s_noise: Annotated[float, _ETA] = 1.0,
) -> _SamplerOut:
    """ER-SDE, its reverse-time SDE form (noise scale x^(eta+1)) or its ODE form (no noise)."""
    if solver_type not in _ER_SDE_TYPES:
        raise ValueError(f"unknown solver_type {solver_type!r}; expected one of {', '.join(_ER_SDE_TYPES)}")
    if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
        eta, s_noise = 0.0, 0.0
    scaler = None
    if solver_type != "ER-SDE":
        power = eta + 1

        def scaler(x: Any) -> Any:
            return x**power

    return _choice("er_sde", s_noise=s_noise, max_stage=max_stage, noise_scaler=scaler)


@node(category="sampling/custom_sampling/samplers", display_name="SamplerSASolver")
def SamplerSASolver(
    model: Annotated[Model, Input()],
    eta: Annotated[float, Range(0.0, 10.0, step=0.01, round=False)] = 1.0,
    sde_start_percent: Annotated[float, Range(0.0, 1.0, step=0.001)] = 0.2,
    sde_end_percent: Annotated[float, Range(0.0, 1.0, step=0.001)] = 0.8,
    s_noise: Annotated[float, _ETA] = 1.0,
    predictor_order: Annotated[int, Range(1, 6)] = 3,
    corrector_order: Annotated[int, Range(0, 6)] = 4,
    use_pece: bool = REQUIRED,
    simple_order_2: bool = REQUIRED,
) -> _SamplerOut:
    """SA-Solver with noise between the two sampling percents; PECE re-evaluates each corrected step."""
    from diffusion.sampling.samplers.sa_solver import tau_window

    if sde_start_percent > sde_end_percent:
        raise ValueError("sde_start_percent must not be greater than sde_end_percent")
    tau = tau_window(_model(model).schedule, sde_start_percent, sde_end_percent, eta)
    return _choice("sa_solver", tau_func=tau, s_noise=s_noise, predictor_order=predictor_order,
                   corrector_order=corrector_order, use_pece=bool(use_pece), simple_order_2=bool(simple_order_2))


@node(category="sampling/custom_sampling/samplers", display_name="SamplerLCMUpscale")
def SamplerLCMUpscale(
    scale_ratio: Annotated[float, Range(0.1, 20.0, step=0.01)] = 1.0,
    scale_steps: Annotated[int, Range(-1, 1000, step=1)] = -1,
    upscale_method: Annotated[str, OneOf(("bislerp", "nearest-exact", "bilinear", "area", "bicubic"), v3=True)
                              ] = REQUIRED,
) -> _SamplerOut:
    """LCM that enlarges the latent by ``scale_ratio`` over its first ``scale_steps`` steps (-1: half of them)."""
    from diffusion.sampling.custom import SamplerChoice
    from diffusion.sampling.samplers.discrete import sample_lcm_upscale

    options = {"total_upscale": scale_ratio, "upscale_method": upscale_method,
               "upscale_steps": None if scale_steps < 0 else scale_steps}
    return SamplerChoice("lcm", options, function=sample_lcm_upscale)
