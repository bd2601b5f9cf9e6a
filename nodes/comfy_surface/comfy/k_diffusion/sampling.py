"""ComfyUI's ``comfy.k_diffusion.sampling``: the small helpers samplers written in packs use."""

from __future__ import annotations

import torch

from ... import missing

__getattr__ = missing("comfy.k_diffusion.sampling")


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """``x`` with trailing singleton dimensions up to ``target_dims``."""
    missing_dims = target_dims - x.ndim
    if missing_dims < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing_dims]


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The Karras ODE derivative ``(x - denoised) / sigma``."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                      device: str = "cpu") -> torch.Tensor:
    """Karras et al.'s noise levels, ending with 0."""
    from diffusion.sampling.schedulers import karras_schedule

    return karras_schedule(n, sigma_min, sigma_max, rho).to(device)
