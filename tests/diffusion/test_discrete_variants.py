"""ModelSamplingDiscrete's lcm and img_to_img sampling types, checked against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.sampling.discrete_variants import ImageToImageSchedule, LCMSchedule
from diffusion.sampling.schedule import DiscreteSchedule


def training_sigmas() -> np.ndarray:
    """The LDM linear-beta table in float64, computed here independently of the package."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_bar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - alphas_bar) / alphas_bar)


def test_lcm_keeps_the_sigmas_of_timesteps_19_39_to_999() -> None:
    lcm = LCMSchedule()
    timesteps = np.arange(19, 1000, 20)
    assert len(lcm.sigmas) == 50 and lcm.sigmas.dtype == torch.float32
    np.testing.assert_allclose(lcm.sigmas.numpy(), training_sigmas()[timesteps], rtol=1e-6)
    assert torch.equal(lcm.timestep(lcm.sigmas), torch.from_numpy(timesteps))
    assert float(lcm.sigma_max) == pytest.approx(14.6146, rel=1e-5)
    assert float(lcm.sigma_min) == pytest.approx(training_sigmas()[19], rel=1e-6)


def test_lcm_sigma_and_timestep_map_onto_the_kept_table() -> None:
    lcm = LCMSchedule()
    # A sigma between two kept entries goes to the nearer one in log space (the plain table's 673 is not kept).
    assert int(DiscreteSchedule().timestep(torch.tensor(3.0))) == 673
    assert int(lcm.timestep(torch.tensor(3.0))) == 679
    # Timestep 509 lies halfway between the kept 499 and 519.
    halfway = math.exp((math.log(float(lcm.sigmas[24])) + math.log(float(lcm.sigmas[25]))) / 2)
    assert float(lcm.sigma(torch.tensor(509.0))) == pytest.approx(halfway, rel=1e-6)
    # exp(log(sigma)) may move the last bit, as in ComfyUI.
    assert float(lcm.sigma(torch.tensor(999.0))) == pytest.approx(float(lcm.sigmas[-1]), rel=1e-6)
    assert float(lcm.sigma(torch.tensor(0.0))) == pytest.approx(float(lcm.sigmas[0]), rel=1e-6)  # clamped
    assert lcm.percent_to_sigma(0.5) == pytest.approx(float(lcm.sigma(torch.tensor(499.5))))
    assert lcm.percent_to_sigma(0.0) == 999999999.9 and lcm.percent_to_sigma(1.0) == 0.0


def test_lcm_with_zero_terminal_snr_thins_the_rescaled_table() -> None:
    zsnr = LCMSchedule(zsnr=True)
    full = DiscreteSchedule(zsnr=True)
    assert torch.equal(zsnr.sigmas, full.sigmas[19::20])
    assert float(zsnr.sigma_max) == pytest.approx(4518.8, rel=1e-3)


@pytest.mark.parametrize("sigma_value", [0.2, 3.0, 14.6])
def test_lcm_denoised_is_the_consistency_boundary_condition(sigma_value: float) -> None:
    lcm = LCMSchedule()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g) * 3.0
    eps = torch.randn(2, 4, 8, 8, generator=g)
    sigma = torch.full((2,), sigma_value)
    denoised = lcm.calculate_denoised(sigma, eps, x)
    # c_skip and c_out at the LCM timestep scaled by 10, sigma_data 0.5, on the eps model's x0 (float64 here).
    t = float(lcm.timestep(torch.tensor(sigma_value))) * 10.0
    c_skip = 0.25 / (t * t + 0.25)
    c_out = t / math.sqrt(t * t + 0.25)
    x64, eps64 = x.double(), eps.double()
    expected = c_out * (x64 - eps64 * sigma_value) + c_skip * x64
    torch.testing.assert_close(denoised.double(), expected, rtol=1e-6, atol=1e-6)
    # Where the eps model's x0 is 0 the output is c_skip * x, not 0 (float64 so that x0 really is 0).
    x0_zero = lcm.calculate_denoised(torch.full((2,), sigma_value, dtype=torch.float64), x64 / sigma_value, x64)
    torch.testing.assert_close(x0_zero, c_skip * x64, rtol=1e-6, atol=1e-12)
    assert float(x0_zero.abs().max()) > 0


def test_img_to_img_feeds_the_latent_unscaled_and_reads_x0() -> None:
    schedule = ImageToImageSchedule()
    eps_schedule = DiscreteSchedule()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 5.0
    out = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([5.0])
    assert torch.equal(schedule.scale_input(x, sigma), x)
    assert torch.equal(schedule.calculate_denoised(sigma, out, x), out)
    assert torch.equal(schedule.sigmas, eps_schedule.sigmas) and schedule.prediction == "x0"
    # Noise goes in as for eps models (times sqrt(1 + sigma^2) from sigma_max).
    noise, latent = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    for max_denoise in (False, True):
        assert torch.equal(schedule.noise_scaling(sigma, noise, latent, max_denoise),
                           eps_schedule.noise_scaling(sigma, noise, latent, max_denoise))
    assert torch.equal(ImageToImageSchedule(zsnr=True).sigmas, DiscreteSchedule(zsnr=True).sigmas)
