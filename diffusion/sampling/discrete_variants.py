"""ModelSamplingDiscrete's other sampling types: LCM's distilled schedule and img_to_img.

Both keep the 1000-step table of :class:`~diffusion.sampling.schedule.DiscreteSchedule`
(optionally rescaled to zero terminal SNR) and change what the model call does with it:

* ``lcm`` (latent consistency models): the model was distilled on 50 of the 1000 training
  timesteps (19, 39, ..., 999), so the table keeps only those sigmas and a sigma maps to
  the nearest of them. The UNet predicts noise; its denoised output goes through the
  consistency boundary condition ``c_skip(t) * x + c_out(t) * x0`` with ``sigma_data =
  0.5`` and the timestep scaled by 10, as ComfyUI's LCM sampling type does.
* ``img_to_img``: the UNet takes the noisy latent as it is (no ``1 / sqrt(sigma^2 + 1)``
  input scaling) and outputs the clean latent; noise is added as for eps models.
"""

from __future__ import annotations

import torch

from diffusion.sampling.schedule import DiscreteSchedule, broadcast_sigma

#: The number of timesteps an LCM was distilled on (one every 20 of the 1000).
LCM_ORIGINAL_STEPS = 50
#: LCM's boundary condition: the data's standard deviation and the factor on the timestep.
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0


class LCMSchedule(DiscreteSchedule):
    """The 50-timestep schedule of a latent consistency model, with LCM's denoised output.

    ``sigmas[k]`` is the training table's sigma at timestep ``20 k + 19``; ``timestep``
    and ``sigma`` convert between sigmas and those training timesteps.
    """

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, zsnr: bool = False) -> None:
        """The LDM linear-beta table (zero terminal SNR if ``zsnr``), thinned to LCM's 50 timesteps."""
        super().__init__(linear_start, linear_end, prediction="eps", zsnr=zsnr)
        self.skip_steps = len(self.sigmas) // LCM_ORIGINAL_STEPS
        self.sigmas = self.sigmas[self.skip_steps - 1::self.skip_steps].clone()
        # The log of the float32 subset (ComfyUI sets the thinned table as a new float32 one).
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The training timestep (19, 39, ... 999) of the kept sigma nearest to ``sigma`` in log space."""
        return super().timestep(sigma) * self.skip_steps + (self.skip_steps - 1)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma at a training timestep, log-linear between the kept sigmas (clamped to their range)."""
        t = torch.as_tensor(timestep).float()
        return super().sigma((t - (self.skip_steps - 1)) / self.skip_steps)

    def calculate_denoised(self, sigma: torch.Tensor, model_output: torch.Tensor, x: torch.Tensor,
                           prediction: str | None = None) -> torch.Tensor:  # type: ignore[override]
        """``c_out * (x - eps * sigma) + c_skip * x`` with LCM's coefficients at the sigma's timestep."""
        x0 = super().calculate_denoised(sigma, model_output, x, "eps")
        timestep = self.timestep(torch.as_tensor(sigma).cpu()).to(x.device)
        scaled = broadcast_sigma(timestep, x.ndim) * LCM_TIMESTEP_SCALING
        c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
        c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2) ** 0.5
        return c_out * x0 + c_skip * x


class ImageToImageSchedule(DiscreteSchedule):
    """The discrete table for a model that maps the unscaled noisy latent straight to the clean one."""

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, zsnr: bool = False) -> None:
        """The LDM linear-beta table (zero terminal SNR if ``zsnr``); the UNet predicts x0."""
        super().__init__(linear_start, linear_end, prediction="x0", zsnr=zsnr)

    @staticmethod
    def scale_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The UNet sees the noisy latent unscaled."""
        return x
