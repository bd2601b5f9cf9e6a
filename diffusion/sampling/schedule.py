"""The discrete noise schedule of SD1.x/SDXL (ComfyUI's ``ModelSamplingDiscrete``).

The table is built exactly as ComfyUI builds it (PROTOCOL.md 9.2): betas and their
cumulative product in float64, sigmas stored in float32 and the log-sigmas taken from
the *float64* sigmas before the cast. Every later number (schedules, timesteps fed to
the UNet) starts from this table, so its rounding is part of the contract.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Prediction = Literal["eps", "v", "x0"]
#: The last cumulative alpha of a zero-terminal-SNR table (ComfyUI's stand-in for 0, which has no sigma).
ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


class DiscreteSchedule:
    """A 1000-step DDPM schedule seen in sigma space (``sigma_t = sqrt((1 - abar_t) / abar_t)``).

    ``sigmas`` and ``log_sigmas`` are float32 tensors indexed by the integer timestep.
    """

    def __init__(
        self,
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        timesteps: int = 1000,
        prediction: Prediction = "eps",
        zsnr: bool = False,
    ) -> None:
        """Build the table for LDM's "linear" beta schedule (SD1.x and SDXL defaults).

        ``prediction`` is what the UNet outputs (noise, v or the clean latent); ``zsnr``
        rescales the table to zero terminal SNR (ModelSamplingDiscrete's option).
        """
        betas = torch.linspace(math.sqrt(linear_start), math.sqrt(linear_end), timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas64 = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas64 = rescale_zero_terminal_snr(sigmas64)
        self.prediction: Prediction = prediction
        self.zsnr = zsnr
        self.sigmas = sigmas64.float()
        # ComfyUI logs the float64 sigmas, not the float32 ones: the two differ in the last bit.
        self.log_sigmas = sigmas64.log().float()

    @property
    def sigma_min(self) -> torch.Tensor:
        """The smallest sigma of the table (timestep 0), a float32 0-d tensor."""
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        """The largest sigma of the table (timestep 999), a float32 0-d tensor."""
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The integer timestep whose log-sigma is nearest to ``log(sigma)`` (same shape, int64)."""
        sigma = torch.as_tensor(sigma)
        distances = sigma.log().reshape(1, -1) - self.log_sigmas[:, None]
        return distances.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a (possibly fractional) timestep: log-linear interpolation of the table."""
        t = torch.clamp(torch.as_tensor(timestep).float(), min=0, max=len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the denoising process (0 = start, 1 = end), as ComfyUI's nodes use it."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))

    # --- the model call in sigma space -----------------------------------------------------------

    @staticmethod
    def scale_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The UNet's input for a noisy latent: ``x / sqrt(sigma^2 + 1)`` (``sigma`` of shape [B])."""
        sigma = broadcast_sigma(sigma, x.ndim)
        return x / (sigma**2 + 1.0) ** 0.5

    def calculate_denoised(
        self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor, prediction: Prediction | None = None
    ) -> torch.Tensor:
        """Turn the UNet's output at ``sigma`` into the denoised latent (eps: ``x - eps*sigma``)."""
        prediction = prediction or self.prediction
        sigma = broadcast_sigma(sigma, x.ndim)
        if prediction == "eps":
            return x - model_output * sigma
        if prediction == "x0":
            return model_output
        if prediction == "v":
            return x * 1.0 / (sigma**2 + 1.0) - model_output * sigma / (sigma**2 + 1.0) ** 0.5
        raise ValueError(f"unknown prediction type {prediction!r}")

    def is_max_denoise(self, sigmas: torch.Tensor) -> bool:
        """True when a schedule starts at (or above) the model's sigma_max: noise is then scaled by sqrt(1+s^2)."""
        max_sigma = float(self.sigma_max)
        first = float(sigmas[0])
        return math.isclose(max_sigma, first, rel_tol=1e-05) or first > max_sigma

    @staticmethod
    def noise_scaling(
        sigma: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False
    ) -> torch.Tensor:
        """The starting point of sampling: ``latent + noise * sigma`` (``* sqrt(1 + sigma^2)`` at max denoise)."""
        sigma = broadcast_sigma(torch.as_tensor(sigma), noise.ndim)
        scaled = noise * torch.sqrt(1.0 + sigma**2.0) if max_denoise else noise * sigma
        return scaled + latent


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """A sigma table shifted and scaled in ``sqrt(alpha_bar)`` so that its last step has (almost) zero SNR.

    Lin et al. 2023 ("Common diffusion noise schedules and sample steps are flawed"); the
    last alpha_bar is :data:`ZSNR_LAST_ALPHA_BAR` instead of 0, as in ComfyUI.
    """
    alphas_bar_sqrt = (1 / (sigmas * sigmas + 1)).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


def process_latent_in(latent: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """VAE latent -> model space (``* scale_factor``); an all-zero latent is left as is, as ComfyUI does."""
    if torch.count_nonzero(latent) == 0:
        return latent
    return latent * scale_factor


def process_latent_out(latent: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Model space -> VAE latent (``/ scale_factor``)."""
    return latent / scale_factor


def broadcast_sigma(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a per-sample sigma ([B]) so it broadcasts over an ``ndim`` latent; scalars pass through."""
    if not isinstance(sigma, torch.Tensor) or sigma.ndim == 0:
        return sigma
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))
