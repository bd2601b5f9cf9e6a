"""What every sampler shares: the model and callback contracts and two small formulas.

A sampler works in sigma space (k-diffusion's convention): ``x`` is the noisy latent
``latent + sigma * noise`` and ``model(x, sigma, **extra_args)`` returns the denoised
latent, with ``sigma`` a float32 tensor of shape ``[B]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

from diffusion.sampling.noise import NoiseSampler
from diffusion.sampling.schedule import broadcast_sigma

#: ``callback({"i", "denoised", "x", "sigma", "sigma_hat"})`` once per step; an exception it raises aborts sampling.
StepCallback = Callable[[dict[str, Any]], None]


class Denoiser(Protocol):
    """``model(x, sigma, **extra_args) -> denoised``: the model wrapped in sigma space (CFG included)."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        """Predict the clean latent of ``x`` at noise level ``sigma`` ([B])."""
        ...


class SamplerFn(Protocol):
    """The signature all sampler functions share."""

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        extra_args: Mapping[str, Any] | None = None,
        callback: StepCallback | None = None,
        noise_sampler: NoiseSampler | None = None,
    ) -> torch.Tensor:
        """Run the whole schedule ``sigmas`` from ``x`` and return the final latent."""
        ...


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma = (x - denoised) / sigma."""
    return (x - denoised) / broadcast_sigma(sigma, x.ndim)


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0) -> tuple[Any, Any]:
    """Split a step into a deterministic part down to ``sigma_down`` and fresh noise of size ``sigma_up``.

    ``sigma_down**2 + sigma_up**2 == sigma_to**2``; eta 0 is a plain ODE step.
    """
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def add_ancestral_noise(
    x: torch.Tensor, noise_sampler: NoiseSampler, sigma: torch.Tensor, sigma_next: torch.Tensor, sigma_up: Any,
    s_noise: float,
) -> torch.Tensor:
    """The ancestral step's way back up: fresh noise of size ``sigma_up`` unless the step ends at sigma 0."""
    if sigma_next > 0:
        x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


def require_noise(noise_sampler: NoiseSampler | None, sampler: str) -> NoiseSampler:
    """The noise sampler a stochastic sampler was given; a clear error when it was not."""
    if noise_sampler is None:
        raise ValueError(f"sampler {sampler!r} draws per-step noise: pass a noise_sampler")
    return noise_sampler


def report(
    callback: StepCallback | None, i: int, x: torch.Tensor, denoised: torch.Tensor, sigma: Any, sigma_hat: Any = None
) -> None:
    """Call the step callback, if any, with ComfyUI's keys."""
    if callback is not None:
        callback({"i": i, "x": x, "denoised": denoised, "sigma": sigma,
                  "sigma_hat": sigma if sigma_hat is None else sigma_hat})


class UncondCapture:
    """A post-CFG hook that keeps the step's negative prediction and changes nothing (what cfg++ samplers read)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, args: Mapping[str, Any]) -> torch.Tensor:
        """Remember ``uncond_denoised``; return ``denoised`` unchanged."""
        self.value = args["uncond_denoised"]
        return args["denoised"]

    @property
    def uncond(self) -> torch.Tensor:
        """The last negative prediction; a clear error when the denoiser never ran the hook."""
        if self.value is None:
            raise ValueError("this cfg++ sampler needs a denoiser that runs post-CFG hooks (model_options)")
        return self.value


def capture_uncond(extra_args: Mapping[str, Any] | None) -> tuple[dict[str, Any], UncondCapture]:
    """``extra_args`` with a :class:`UncondCapture` appended to the post-CFG hooks and the cfg-1 shortcut off.

    The caller's dicts are not changed (ComfyUI's ``set_model_options_post_cfg_function``).
    """
    extra = dict(extra_args or {})
    options = dict(extra.get("model_options") or {})
    capture = UncondCapture()
    options["sampler_post_cfg_function"] = [*options.get("sampler_post_cfg_function", ()), capture]
    options["disable_cfg1_optimization"] = True
    extra["model_options"] = options
    return extra, capture
