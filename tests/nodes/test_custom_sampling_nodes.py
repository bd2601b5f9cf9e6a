"""Custom sampling nodes: SamplerCustom(Advanced), noises, guiders, samplers, schedulers and sigma tools.

The central claim: SamplerCustomAdvanced(CFGGuider, RandomNoise, KSamplerSelect,
BasicScheduler) is KSampler, bit for bit, for every sampler name.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.models import LoadedCheckpoint
from diffusion.sampling import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, SAMPLER_NAMES, ksampler_sigmas
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REFERENCE = Path("/work/shared/reference/comfy_reference_vectors.json")
LATENT = {"samples": torch.zeros(1, 4, 8, 8)}


class Ctx:
    """An executor context that records progress."""

    node_id = "1"
    prompt_id = "p"
    extra_data = {"preview_method": "none"}

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        self.steps.append((value, total))

    def check_interrupted(self) -> None:
        """Never interrupted."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path_factory.mktemp("nodes")), precision="fp32"))


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


def run(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    """One node's outputs."""
    return registry[name].behaviour.execute(None, Ctx(), inputs)


def conds(seed: int) -> list[list[Any]]:
    return [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def ksampler(registry: NodeRegistry, ckpt: LoadedCheckpoint, sampler: str, cfg: float = 3.0,
             steps: int = 2) -> torch.Tensor:
    (out,) = run(registry, "KSampler", model=ckpt.unet, seed=7, steps=steps, cfg=cfg, sampler_name=sampler,
                 scheduler="karras", positive=conds(1), negative=conds(2), latent_image=LATENT, denoise=1.0)
    return out["samples"]


def custom(registry: NodeRegistry, ckpt: LoadedCheckpoint, sampler: str, sigmas: torch.Tensor,
           cfg: float = 3.0) -> tuple[dict[str, Any], dict[str, Any]]:
    (guider,) = run(registry, "CFGGuider", model=ckpt.unet, positive=conds(1), negative=conds(2), cfg=cfg)
    (noise,) = run(registry, "RandomNoise", noise_seed=7)
    (choice,) = run(registry, "KSamplerSelect", sampler_name=sampler)
    return run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=choice, sigmas=sigmas,
               latent_image=LATENT)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_custom_advanced_is_ksampler_bit_for_bit(registry: NodeRegistry, ckpt: LoadedCheckpoint,
                                                 sampler: str) -> None:
    expected = ksampler(registry, ckpt, sampler)
    if sampler in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        # KSampler schedules one step more and drops the penultimate sigma for these; BasicScheduler
        # does not (neither does ComfyUI's), so the custom path gets KSampler's own sigmas here.
        sigmas = ksampler_sigmas(ckpt.unet.schedule, "karras", sampler, 2)
    else:
        (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=2, denoise=1.0)
    out, denoised = custom(registry, ckpt, sampler, sigmas)
    assert torch.equal(out["samples"], expected)
    assert torch.isfinite(denoised["samples"]).all() and denoised["samples"].shape == expected.shape


def test_sampler_custom_is_ksampler_and_reports_progress(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="normal", steps=3, denoise=1.0)
    (choice,) = run(registry, "KSamplerSelect", sampler_name="dpmpp_2m")
    ctx = Ctx()
    out, _ = registry["SamplerCustom"].behaviour.execute(None, ctx, {
        "model": ckpt.unet, "add_noise": True, "noise_seed": 7, "cfg": 3.0, "positive": conds(1),
        "negative": conds(2), "sampler": choice, "sigmas": sigmas, "latent_image": LATENT})
    (expected,) = run(registry, "KSampler", model=ckpt.unet, seed=7, steps=3, cfg=3.0, sampler_name="dpmpp_2m",
                      scheduler="normal", positive=conds(1), negative=conds(2), latent_image=LATENT, denoise=1.0)
    assert torch.equal(out["samples"], expected["samples"])
    assert ctx.steps == [(1, 3), (2, 3), (3, 3)]


def test_denoised_output_is_the_last_prediction(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="simple", steps=1, denoise=1.0)
    out, denoised = custom(registry, ckpt, "lcm", sigmas)  # one LCM step to 0: the result is the prediction
    assert torch.equal(out["samples"], denoised["samples"])
    out, denoised = custom(registry, ckpt, "euler_ancestral", torch.cat([sigmas[:1], sigmas[:1] / 2]))
    assert not torch.equal(out["samples"], denoised["samples"])


def test_empty_sigmas_return_the_latent_unchanged(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    latent = {"samples": torch.randn(1, 4, 8, 8), "batch_index": [0]}
    (guider,) = run(registry, "BasicGuider", model=ckpt.unet, conditioning=conds(1))
    (noise,) = run(registry, "RandomNoise", noise_seed=1)
    (choice,) = run(registry, "KSamplerSelect", sampler_name="euler")
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=4, denoise=0.0)
    assert sigmas.numel() == 0
    out, denoised = run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=choice, sigmas=sigmas,
                        latent_image=latent)
    assert out["samples"] is latent["samples"] and denoised is out and out["batch_index"] == [0]


def test_a_guider_without_model_is_a_one_line_reason(registry: NodeRegistry) -> None:
    with pytest.raises(RuntimeError, match="model input is invalid"):  # ComfyUI's words, as KSampler's
        run(registry, "BasicGuider", model=None, conditioning=conds(1))
    with pytest.raises(ValueError, match="no guider"):
        run(registry, "SamplerCustomAdvanced", noise=None, guider=None, sampler=None, sigmas=torch.ones(2),
            latent_image=LATENT)


def test_basic_guider_is_cfg_one(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    expected = ksampler(registry, ckpt, "euler", cfg=1.0)
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=2, denoise=1.0)
    (guider,) = run(registry, "BasicGuider", model=ckpt.unet, conditioning=conds(1))
    (noise,) = run(registry, "RandomNoise", noise_seed=7)
    (choice,) = run(registry, "KSamplerSelect", sampler_name="euler")
    out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=choice, sigmas=sigmas,
                 latent_image=LATENT)
    assert torch.equal(out["samples"], expected)


def _sample(registry: NodeRegistry, ckpt: LoadedCheckpoint, guider: Any, sampler: str = "euler") -> torch.Tensor:
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=2, denoise=1.0)
    (noise,) = run(registry, "RandomNoise", noise_seed=7)
    (choice,) = run(registry, "KSamplerSelect", sampler_name=sampler)
    out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=choice, sigmas=sigmas,
                 latent_image=LATENT)
    return out["samples"]


def test_dual_cfg_guider_reduces_to_cfg(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (cfg,) = run(registry, "CFGGuider", model=ckpt.unet, positive=conds(1), negative=conds(2), cfg=4.0)
    plain = _sample(registry, ckpt, cfg)
    # regular: cfg(cond2, negative, cfg2) + (cond1 - cond2) * cfg1 -- with cond1 == cond2 that is plain CFG.
    (dual,) = run(registry, "DualCFGGuider", model=ckpt.unet, cond1=conds(1), cond2=conds(1), negative=conds(2),
                  cfg_conds=2.5, cfg_cond2_negative=4.0, style="regular")
    torch.testing.assert_close(_sample(registry, ckpt, dual), plain, rtol=1e-5, atol=1e-5)
    # nested at cfg2 = 1: the inner CFG of cond1 over cond2.
    (nested,) = run(registry, "DualCFGGuider", model=ckpt.unet, cond1=conds(1), cond2=conds(2), negative=conds(3),
                    cfg_conds=4.0, cfg_cond2_negative=1.0, style="nested")
    torch.testing.assert_close(_sample(registry, ckpt, nested), plain, rtol=1e-5, atol=1e-5)
    (other,) = run(registry, "DualCFGGuider", model=ckpt.unet, cond1=conds(1), cond2=conds(3), negative=conds(2),
                   cfg_conds=2.5, cfg_cond2_negative=4.0, style="regular")
    assert not torch.allclose(_sample(registry, ckpt, other), plain, atol=1e-4)


def test_perp_neg_guider_with_the_empty_negative_is_cfg(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (cfg,) = run(registry, "CFGGuider", model=ckpt.unet, positive=conds(1), negative=conds(2), cfg=4.0)
    (perp,) = run(registry, "PerpNegGuider", model=ckpt.unet, positive=conds(1), negative=conds(2),
                  empty_conditioning=conds(2), cfg=4.0, neg_scale=1.0)
    torch.testing.assert_close(_sample(registry, ckpt, perp), _sample(registry, ckpt, cfg), rtol=1e-5, atol=1e-5)
    (pushed,) = run(registry, "PerpNegGuider", model=ckpt.unet, positive=conds(1), negative=conds(3),
                    empty_conditioning=conds(2), cfg=4.0, neg_scale=1.0)
    assert not torch.allclose(_sample(registry, ckpt, pushed), _sample(registry, ckpt, cfg), atol=1e-4)


def test_add_noise_and_disable_noise(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    sigmas = torch.tensor([3.0, 1.0, 0.0])
    (noise,) = run(registry, "RandomNoise", noise_seed=5)
    (out,) = run(registry, "AddNoise", model=ckpt.unet, noise=noise, sigmas=sigmas, latent_image=latent)
    drawn = noise.generate_noise(latent)
    torch.testing.assert_close(out["samples"], latent["samples"] + drawn * 3.0 / ckpt.unet.latent_scale)
    (none,) = run(registry, "DisableNoise")
    (same,) = run(registry, "AddNoise", model=ckpt.unet, noise=none, sigmas=sigmas, latent_image=latent)
    torch.testing.assert_close(same["samples"], latent["samples"])
    (empty,) = run(registry, "AddNoise", model=ckpt.unet, noise=noise, sigmas=torch.FloatTensor([]),
                   latent_image=latent)
    assert torch.equal(empty["samples"], latent["samples"])


def test_sampler_nodes_pass_their_options(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (cfg,) = run(registry, "CFGGuider", model=ckpt.unet, positive=conds(1), negative=conds(2), cfg=3.0)
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=3, denoise=1.0)
    (noise,) = run(registry, "RandomNoise", noise_seed=7)

    def sample(node: str, **options: Any) -> torch.Tensor:
        (choice,) = run(registry, node, **options)
        out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=cfg, sampler=choice, sigmas=sigmas,
                     latent_image=LATENT)
        return out["samples"]

    assert torch.equal(sample("SamplerEulerAncestral", eta=1.0, s_noise=1.0),
                       sample("KSamplerSelect", sampler_name="euler_ancestral"))
    assert not torch.equal(sample("SamplerEulerAncestral", eta=0.5, s_noise=1.0),
                           sample("SamplerEulerAncestral", eta=1.0, s_noise=1.0))
    sde = {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}
    assert torch.equal(sample("SamplerDPMPP_2M_SDE", solver_type="midpoint", **sde),
                       sample("KSamplerSelect", sampler_name="dpmpp_2m_sde"))
    assert not torch.equal(sample("SamplerDPMPP_2M_SDE", solver_type="heun", **sde),
                           sample("SamplerDPMPP_2M_SDE", solver_type="midpoint", **sde))
    assert torch.equal(sample("SamplerLMS", order=4), sample("KSamplerSelect", sampler_name="lms"))
    assert torch.equal(sample("SamplerER_SDE", solver_type="ER-SDE", max_stage=3, eta=1.0, s_noise=1.0),
                       sample("KSamplerSelect", sampler_name="er_sde"))
    ode = sample("SamplerER_SDE", solver_type="ODE", max_stage=3, eta=1.0, s_noise=1.0)
    assert torch.isfinite(ode).all() and not torch.equal(ode, sample("KSamplerSelect", sampler_name="er_sde"))
    sa = {"model": ckpt.unet, "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8, "s_noise": 1.0,
          "predictor_order": 3, "corrector_order": 4, "simple_order_2": False}
    assert torch.equal(sample("SamplerSASolver", use_pece=False, **sa),
                       sample("KSamplerSelect", sampler_name="sa_solver"))
    assert torch.equal(sample("SamplerSASolver", use_pece=True, **sa),
                       sample("KSamplerSelect", sampler_name="sa_solver_pece"))
    assert torch.isfinite(sample("SamplerSASolver", use_pece=False, **{**sa, "simple_order_2": True})).all()
    for node, options in [("SamplerDPMPP_3M_SDE", {"eta": 1.0, "s_noise": 1.0, "noise_device": "gpu"}),
                          ("SamplerDPMPP_SDE", {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"}),
                          ("SamplerDPMPP_2S_Ancestral", {"eta": 1.0, "s_noise": 1.0}),
                          ("SamplerEulerAncestralCFGPP", {"eta": 1.0, "s_noise": 1.0}),
                          ("SamplerEulerCFGpp", {"version": "regular"}),
                          ("SamplerEulerCFGpp", {"version": "alternative"}),
                          ("SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05,
                                                    "pcoeff": 0.0, "icoeff": 1.0, "dcoeff": 0.0,
                                                    "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0})]:
        assert torch.isfinite(sample(node, **options)).all(), node


def test_lcm_upscale_grows_the_latent(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (cfg,) = run(registry, "CFGGuider", model=ckpt.unet, positive=conds(1), negative=conds(2), cfg=1.0)
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=4, denoise=1.0)
    (noise,) = run(registry, "RandomNoise", noise_seed=7)
    (choice,) = run(registry, "SamplerLCMUpscale", scale_ratio=2.0, scale_steps=-1, upscale_method="bilinear")
    out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=cfg, sampler=choice, sigmas=sigmas,
                 latent_image=LATENT)
    assert out["samples"].shape == (1, 4, 16, 16)


def test_flipped_sigmas_run_as_comfyui_does(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    # Increasing sigmas are not refused: FlipSigmas + euler is how ComfyUI "unsamples" an image.
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=3, denoise=1.0)
    (flipped,) = run(registry, "FlipSigmas", sigmas=sigmas)
    assert flipped[0] == pytest.approx(1e-4) and torch.equal(flipped[1:], sigmas.flip(0)[1:])
    (guider,) = run(registry, "BasicGuider", model=ckpt.unet, conditioning=conds(1))
    (noise,) = run(registry, "DisableNoise")
    (choice,) = run(registry, "KSamplerSelect", sampler_name="euler")
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))}
    out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=choice, sigmas=flipped,
                 latent_image=latent)
    assert torch.isfinite(out["samples"]).all() and out["samples"].std() > latent["samples"].std()


@cache
def reference_sigmas() -> dict[str, Any]:
    if not REFERENCE.exists():
        pytest.skip("ComfyUI reference vectors not available")
    return json.loads(REFERENCE.read_text())["sigmas"]


def test_basic_scheduler_matches_the_reference(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    schedules = reference_sigmas()["schedules"]
    checked = 0
    for scheduler, by_steps in schedules.items():
        for steps, expected in by_steps.items():
            (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler=scheduler, steps=int(steps),
                            denoise=1.0)
            if len(expected) != int(steps) + 1:
                continue  # ddim_uniform/beta make a different count; BasicScheduler keeps the last steps + 1
            torch.testing.assert_close(sigmas, torch.tensor([float(v) for v in expected]), rtol=1e-6, atol=0,
                                       equal_nan=True)
            checked += 1
    assert checked > 20


def test_range_schedulers_match_the_reference(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    schedule = ckpt.unet.schedule
    low, high = float(schedule.sigma_min), float(schedule.sigma_max)
    for name, node, extra in [("karras", "KarrasScheduler", {"rho": 7.0}), ("exponential", "ExponentialScheduler", {})]:
        for steps, expected in reference_sigmas()["schedules"][name].items():
            (sigmas,) = run(registry, node, steps=int(steps), sigma_max=high, sigma_min=low, **extra)
            torch.testing.assert_close(sigmas, torch.tensor(expected), rtol=1e-6, atol=0)
    (poly,) = run(registry, "PolyexponentialScheduler", steps=6, sigma_max=high, sigma_min=low, rho=1.0)
    (expo,) = run(registry, "ExponentialScheduler", steps=6, sigma_max=high, sigma_min=low)
    torch.testing.assert_close(poly, expo, rtol=1e-6, atol=0)


def test_other_scheduler_nodes(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    schedule = ckpt.unet.schedule
    (turbo,) = run(registry, "SDTurboScheduler", model=ckpt.unet, steps=1, denoise=1.0)
    # 14.61464024: the table's sigma through exp(log(.)), as ComfyUI's model_sampling.sigma gives it.
    assert turbo.tolist() == [float(schedule.sigma(torch.tensor(999))), 0.0] == [pytest.approx(14.61464024), 0.0]
    (turbo2,) = run(registry, "SDTurboScheduler", model=ckpt.unet, steps=2, denoise=0.5)
    assert turbo2.tolist() == pytest.approx([float(schedule.sigmas[499]), float(schedule.sigmas[399]), 0.0])
    (ays,) = run(registry, "AlignYourStepsScheduler", model_type="SD1", steps=10, denoise=1.0)
    assert ays[0] == pytest.approx(14.6146412293) and ays[5] == pytest.approx(1.3943805092) and ays[-1] == 0
    (ays20,) = run(registry, "AlignYourStepsScheduler", model_type="SDXL", steps=20, denoise=0.5)
    assert len(ays20) == 11 and bool((ays20[:-1].diff() < 0).all())
    (beta,) = run(registry, "BetaSamplingScheduler", model=ckpt.unet, steps=10, alpha=0.6, beta=0.6)
    torch.testing.assert_close(beta, torch.tensor(reference_sigmas()["schedules"]["beta"]["10"]), rtol=1e-6, atol=0)
    (laplace,) = run(registry, "LaplaceScheduler", steps=8, sigma_max=14.6, sigma_min=0.03, mu=0.0, beta=0.5)
    assert len(laplace) == 9 and laplace.max() <= 14.6 and laplace.min() == 0 and bool((laplace.diff() <= 0).all())
    (vp,) = run(registry, "VPScheduler", steps=5, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    assert len(vp) == 6 and bool((vp.diff() < 0).all())


def test_sigma_tools(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    high, low = run(registry, "SplitSigmas", sigmas=sigmas, step=2)
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]
    high, low = run(registry, "SplitSigmasDenoise", sigmas=sigmas, denoise=0.5)
    assert high.tolist() == [10.0, 5.0, 2.0] and low.tolist() == [2.0, 1.0, 0.0]  # 2 of 4 steps in the low part
    (first,) = run(registry, "SetFirstSigma", sigmas=sigmas, sigma=136.0)
    assert first.tolist() == [136.0, 5.0, 2.0, 1.0, 0.0] and sigmas[0] == 10.0
    (extended,) = run(registry, "ExtendIntermediateSigmas", sigmas=sigmas, steps=2, start_at_sigma=-1.0,
                      end_at_sigma=2.0, spacing="linear")
    assert extended.tolist() == [10.0, 7.5, 5.0, 3.5, 2.0, 1.5, 1.0, 0.0]
    (percent,) = run(registry, "SamplingPercentToSigma", model=ckpt.unet, sampling_percent=0.0,
                     return_actual_sigma=False)
    assert percent == 999999999.9
    (actual,) = run(registry, "SamplingPercentToSigma", model=ckpt.unet, sampling_percent=0.0,
                    return_actual_sigma=True)
    assert actual == pytest.approx(14.6146, rel=1e-4)
    (middle,) = run(registry, "SamplingPercentToSigma", model=ckpt.unet, sampling_percent=0.5,
                    return_actual_sigma=False)
    assert middle == ckpt.unet.schedule.percent_to_sigma(0.5)


def test_model_sampling_discrete(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (eps,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="eps", zsnr=False)
    assert eps is not ckpt.unet and ckpt.unet.schedule.prediction == "eps"
    (sigmas,) = run(registry, "BasicScheduler", model=ckpt.unet, scheduler="karras", steps=2, denoise=1.0)

    def sample(model: Any) -> torch.Tensor:
        (guider,) = run(registry, "CFGGuider", model=model, positive=conds(1), negative=conds(2), cfg=3.0)
        (noise,) = run(registry, "RandomNoise", noise_seed=7)
        (choice,) = run(registry, "KSamplerSelect", sampler_name="euler")
        out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=choice, sigmas=sigmas,
                     latent_image=LATENT)
        return out["samples"]

    plain = sample(ckpt.unet)
    assert torch.equal(sample(eps), plain)
    (v,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="v_prediction", zsnr=False)
    (x0,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="x0", zsnr=False)
    assert v.schedule.prediction == "v" and x0.schedule.prediction == "x0"
    assert not torch.allclose(sample(v), plain) and not torch.allclose(sample(x0), plain)
    (zsnr,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="v_prediction", zsnr=True)
    # Zero terminal SNR: the last alpha_bar is ComfyUI's 4.897e-8, so sigma_max is about 4519; the start is kept.
    assert float(zsnr.schedule.sigma_max) == pytest.approx(4518.8, rel=1e-3)
    assert float(zsnr.schedule.sigma_min) == pytest.approx(float(ckpt.unet.schedule.sigma_min), rel=1e-3)
    with pytest.raises(ValueError, match="unknown sampling"):
        run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="edm", zsnr=False)
