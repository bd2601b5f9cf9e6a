"""Every sampler we offer, run on ComfyUI's toy denoiser, against ComfyUI's recorded steps.

The toy stands in for UNet + eps wrapper: ``denoised = x/(1+s^2) + 0.1*tanh(x)*s/(1+s)``,
with an uncond of ``0.9 * denoised`` mixed in by CFG (PROTOCOL.md 9.6).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.sampling import (
    SAMPLER_NAMES,
    DiscreteSchedule,
    calculate_sigmas,
    guided_denoiser,
    prepare_denoise_mask,
    prepare_noise,
    sample,
)

REFERENCE = Path("/work/shared/reference/comfy_reference_vectors.json")
REQUIRED = {
    "euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
    "dpmpp_sde", "dpmpp_2s_ancestral", "ddim", "lcm", "uni_pc",
}
#: ComfyUI's ipndm callback passes the initial x every step; ours passes the current state.
#: (ipndm_v and deis report the initial x as ComfyUI does, so their x is compared.)
STALE_CALLBACK_X = {"ipndm"}


@cache
def reference() -> dict[str, Any]:
    """The ``samplers`` section of ComfyUI's reference vectors."""
    if not REFERENCE.exists():
        pytest.skip("ComfyUI reference vectors not available")
    return json.loads(REFERENCE.read_text())["samplers"]


def toy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The reference's toy denoiser (a smooth, sigma-dependent shrink towards 0)."""
    s = sigma.view(-1, 1, 1, 1)
    return x / (1 + s**2) + 0.1 * torch.tanh(x) * s / (1 + s)


def toy_uncond(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The reference's negative prediction."""
    return 0.9 * toy(x, sigma)


def cases() -> list[tuple[str, str]]:
    """(results key, case name) for every recorded run of a sampler we implement."""
    if not REFERENCE.exists():
        return []
    results = json.loads(REFERENCE.read_text())["samplers"]["results"]
    return [(key, name) for key in results for name in results[key] if name.split("@")[0] in SAMPLER_NAMES]


def test_sampler_names_are_comfyuis_in_order() -> None:
    assert set(SAMPLER_NAMES) >= REQUIRED
    assert list(SAMPLER_NAMES) == reference()["sampler_names"]


@pytest.mark.parametrize(("key", "name"), cases())
def test_sampler_matches_comfyui_at_every_step(key: str, name: str) -> None:
    ref = reference()["results"][key][name]
    sigmas = torch.tensor(ref["sigmas"], dtype=torch.float32)
    model_sigmas: list[float] = []
    steps: list[dict[str, Any]] = []
    denoiser = guided_denoiser(toy, toy_uncond, ref["cfg"])

    def counted(x: torch.Tensor, sigma: torch.Tensor, model_options: dict[str, Any] | None = None) -> torch.Tensor:
        model_sigmas.append(float(sigma[0]))
        return denoiser(x, sigma, model_options)

    latent = torch.zeros([1, 4, 4, 4])

    def record(step: dict[str, Any]) -> None:
        steps.append({k: v.clone() if torch.is_tensor(v) else v for k, v in step.items()})

    out = sample(counted, prepare_noise(latent, 42), latent, sigmas, name.split("@")[0], seed=42, callback=record)

    torch.testing.assert_close(out.flatten(), torch.tensor(ref["output"]), rtol=1e-5, atol=1e-5)
    assert model_sigmas == pytest.approx(ref["model_call_sigmas"], rel=1e-6)
    assert [step["i"] for step in steps] == [c["i"] for c in ref["callbacks"]]
    for step, recorded in zip(steps, ref["callbacks"], strict=True):
        expected_denoised = torch.tensor(recorded["denoised_first4"])
        torch.testing.assert_close(step["denoised"].flatten()[:4], expected_denoised, rtol=1e-5, atol=1e-5)
        if name not in STALE_CALLBACK_X:
            expected_x = torch.tensor(recorded["x_first4"])
            torch.testing.assert_close(step["x"].flatten()[:4], expected_x, rtol=1e-5, atol=1e-5)


def karras6() -> torch.Tensor:
    """The schedule the reference runs use."""
    return calculate_sigmas(DiscreteSchedule(), "karras", 6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_euler_agrees_with_diffusers_euler_discrete() -> None:
    from diffusers import EulerDiscreteScheduler

    sigmas = karras6()
    latent = torch.zeros([1, 4, 4, 4])
    noise = prepare_noise(latent, 7)
    ours = sample(toy, noise, latent, sigmas, "euler", seed=7)

    oracle = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    oracle.set_timesteps(sigmas=sigmas.tolist())
    # ComfyUI starts a full-denoise run at noise * sqrt(1 + sigma_max^2), not diffusers' noise * sigma_max.
    x = noise * torch.sqrt(1 + sigmas[0] ** 2)
    for i, t in enumerate(oracle.timesteps):
        oracle.scale_model_input(x, t)
        sigma = oracle.sigmas[i].reshape(1)
        eps = (x - toy(x, sigma)) / sigma
        x = oracle.step(eps, t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "lcm"])
def test_seeded_runs_are_bit_reproducible(name: str) -> None:
    latent = torch.zeros([1, 4, 8, 8])
    sigmas = karras6()

    def run(seed: int) -> torch.Tensor:
        return sample(toy, prepare_noise(latent, seed), latent, sigmas, name, seed=seed)

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_callback_exception_stops_sampling() -> None:
    class StopRequestedError(Exception):
        pass

    calls: list[int] = []

    def callback(step: dict[str, Any]) -> None:
        calls.append(step["i"])
        if step["i"] == 2:
            raise StopRequestedError

    latent = torch.zeros([1, 4, 4, 4])
    with pytest.raises(StopRequestedError):
        sample(toy, prepare_noise(latent, 1), latent, karras6(), "dpmpp_2m", seed=1, callback=callback)
    assert calls == [0, 1, 2]


def test_callback_reports_sigmas() -> None:
    seen: list[tuple[float, float]] = []
    latent = torch.zeros([1, 4, 4, 4])
    sigmas = karras6()
    sample(toy, prepare_noise(latent, 1), latent, sigmas, "heun", seed=1,
           callback=lambda step: seen.append((float(step["sigma"]), float(step["sigma_hat"]))))
    assert seen == [(float(s), float(s)) for s in sigmas[:-1]]


def test_empty_sigmas_return_the_latent_untouched() -> None:
    latent = torch.randn([1, 4, 4, 4])

    def never(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run")

    assert sample(never, torch.randn_like(latent), latent, torch.FloatTensor([]), "euler", seed=0) is latent


def test_unknown_sampler_is_a_clear_error() -> None:
    latent = torch.zeros([1, 4, 4, 4])
    with pytest.raises(ValueError, match="unknown sampler 'nope'"):
        sample(toy, latent, latent, karras6(), "nope", seed=0)


def test_partial_denoise_starts_at_sigma_not_sqrt() -> None:
    """Below sigma_max the noise is scaled by sigma itself (9.4): check on the first model input."""
    first_inputs: list[torch.Tensor] = []
    latent = torch.full([1, 4, 4, 4], 0.5)
    noise = prepare_noise(latent, 3)
    sigmas = torch.tensor([2.0, 1.0, 0.0])

    def spy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        first_inputs.append(x.clone())
        return toy(x, sigma)

    sample(spy, noise, latent, sigmas, "euler", seed=3)
    torch.testing.assert_close(first_inputs[0], latent + noise * 2.0)


def mixing_toy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The toy plus a little of the spatial mean, so that kept pixels influence regenerated ones."""
    s = sigma.view(-1, 1, 1, 1)
    return toy(x, sigma) + 0.05 * x.mean(dim=(2, 3), keepdim=True) / (1 + s**2)


class TestInpaint:
    """KSamplerX0Inpaint: where the mask is 0 the latent is kept, where 1 it is regenerated."""

    latent = torch.linspace(-1, 1, 64).reshape(1, 4, 4, 4)

    def run(self, name: str, mask: torch.Tensor | None, seed: int = 9) -> torch.Tensor:
        return sample(mixing_toy, prepare_noise(self.latent, seed), self.latent, karras6(), name, seed=seed,
                      denoise_mask=mask)

    def test_full_mask_is_plain_sampling(self) -> None:
        assert torch.equal(self.run("euler", torch.ones(1, 1, 4, 4)), self.run("euler", None))

    def test_kept_region_ends_at_the_latent(self) -> None:
        mask = torch.zeros(1, 1, 4, 4)
        mask[..., :2] = 1.0
        out = self.run("dpmpp_2m", mask)
        torch.testing.assert_close(out[..., 2:], self.latent[..., 2:], rtol=0, atol=1e-5)
        assert not torch.allclose(out[..., :2], self.latent[..., :2], atol=1e-2)

    def test_ddim_uses_its_own_inpaint_noise(self) -> None:
        mask = torch.zeros(1, 1, 4, 4)
        mask[..., :2] = 1.0
        assert torch.equal(self.run("ddim", None), self.run("euler", None))
        assert not torch.equal(self.run("ddim", mask), self.run("euler", mask))


def test_noise_mask_is_resized_and_repeated_for_the_latent() -> None:
    image_mask = torch.zeros(64, 64)
    image_mask[:, 32:] = 1.0
    mask = prepare_denoise_mask(image_mask, (3, 4, 8, 8))
    assert mask.shape == (3, 4, 8, 8)
    assert torch.equal(mask[:, :, :, 4:], torch.ones(3, 4, 8, 4))
    assert torch.equal(mask[:, :, :, :4], torch.zeros(3, 4, 8, 4))
    two = prepare_denoise_mask(torch.stack([torch.zeros(8, 8), torch.ones(8, 8)]), (3, 4, 8, 8))
    assert [float(m.mean()) for m in two] == [0.0, 1.0, 0.0]


def test_stochastic_sampler_without_noise_is_a_clear_error() -> None:
    from diffusion.sampling.samplers.euler import sample_euler_ancestral

    with pytest.raises(ValueError, match="euler_ancestral"):
        sample_euler_ancestral(toy, torch.zeros([1, 4, 4, 4]), karras6())
