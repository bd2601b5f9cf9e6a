"""The model-call helpers of DiscreteSchedule: input scaling, denoised conversion, noise scaling, latent scale."""

from __future__ import annotations

import torch

from diffusion.sampling import DiscreteSchedule, process_latent_in, process_latent_out

SCHEDULE = DiscreteSchedule()


def test_eps_denoised_inverts_the_forward_process() -> None:
    clean = torch.randn(2, 4, 8, 8)
    eps = torch.randn(2, 4, 8, 8)
    sigma = torch.tensor([3.0, 0.5])
    noisy = clean + eps * sigma.view(2, 1, 1, 1)
    torch.testing.assert_close(SCHEDULE.calculate_denoised(sigma, eps, noisy, "eps"), clean)


def test_v_prediction_denoised() -> None:
    # v = alpha * eps - sigma_vp * x0 on the VP latent; x here is the VE latent x0 + sigma * eps.
    clean, eps = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    sigma = torch.tensor([2.0])
    alpha, sigma_vp = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5
    v = alpha * eps - sigma_vp * clean
    noisy = clean + sigma * eps
    torch.testing.assert_close(SCHEDULE.calculate_denoised(sigma, v, noisy, "v"), clean, rtol=1e-5, atol=1e-5)


def test_scale_input_is_vp_scaling() -> None:
    x = torch.ones(1, 4, 2, 2)
    torch.testing.assert_close(SCHEDULE.scale_input(x, torch.tensor([3.0])), x / 10**0.5)


def test_noise_scaling_at_max_denoise() -> None:
    noise, latent = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.25)
    top = SCHEDULE.sigma_max
    assert SCHEDULE.is_max_denoise(torch.tensor([float(top), 0.0]))
    assert SCHEDULE.is_max_denoise(torch.tensor([float(top) * (1 - 5e-6), 0.0]))
    assert not SCHEDULE.is_max_denoise(torch.tensor([10.0, 0.0]))
    torch.testing.assert_close(SCHEDULE.noise_scaling(top, noise, latent, True), latent + (1 + top**2) ** 0.5)
    torch.testing.assert_close(SCHEDULE.noise_scaling(torch.tensor(2.0), noise, latent, False), latent + 2.0)


def test_latent_scaling_skips_empty_latents() -> None:
    empty = torch.zeros(1, 4, 8, 8)
    assert process_latent_in(empty, 0.18215) is empty
    latent = torch.ones(1, 4, 8, 8)
    torch.testing.assert_close(process_latent_in(latent, 0.18215), latent * 0.18215)
    torch.testing.assert_close(process_latent_out(process_latent_in(latent, 0.13025), 0.13025), latent)
