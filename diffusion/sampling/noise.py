"""Seeded noise exactly as ComfyUI draws it (PROTOCOL.md 9.5).

Bit-exact images need PyTorch's own CPU generator (mt19937 and its normal sampling),
so everything here draws on the CPU and moves the result afterwards. The CPU generator
keeps only the low 32 bits of a seed: seeds equal modulo 2**32 give the same noise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torchsde

#: ``noise_sampler(sigma, sigma_next) -> noise`` shaped like the latent: the per-step noise of stochastic samplers.
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prepare_noise(
    latent: torch.Tensor | Sequence[int], seed: int, batch_index: Sequence[int] | None = None
) -> torch.Tensor:
    """The initial noise for a latent (or a shape) and a seed, as ``comfy.sample.prepare_noise``.

    The *global* CPU generator is seeded (``torch.manual_seed``), as ComfyUI does. With
    ``batch_index`` (set by nodes such as ``LatentFromBatch``), one ``[1, C, H, W]`` draw
    is made per index 0..max in order and each batch item takes the draw of its index,
    so a sliced batch gets the same noise its items had in the full batch.
    """
    if isinstance(latent, torch.Tensor):
        shape, dtype, layout = tuple(latent.shape), latent.dtype, latent.layout
    else:
        shape, dtype, layout = tuple(latent), torch.float32, torch.strided
    generator = torch.manual_seed(seed)
    if batch_index is None:
        return torch.randn(shape, dtype=dtype, layout=layout, generator=generator, device="cpu")
    wanted = set(batch_index)
    draws: dict[int, torch.Tensor] = {}
    for i in range(max(wanted) + 1):
        # Every index up to the largest is drawn, used or not, to keep the generator's sequence.
        draw = torch.randn((1, *shape[1:]), dtype=dtype, layout=layout, generator=generator, device="cpu")
        if i in wanted:
            draws[i] = draw
    return torch.cat([draws[i] for i in batch_index], dim=0)


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """Fresh Gaussian noise per call from a private generator seeded with ``seed``.

    The seed is the same as the initial noise's, so on the CPU the first per-step draw of
    an ancestral sampler repeats the initial noise (ComfyUI 0.3.64 does the same).
    """
    generator: torch.Generator | None = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)

    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return sample


class BrownianTreeNoiseSampler:
    """Noise from one Brownian motion over sigma (torchsde's BrownianTree), for SDE samplers.

    A call for ``(sigma, sigma_next)`` returns the normalised increment of the motion
    between those two sigmas, so the noise a step sees does not depend on how the
    interval was split: steps and sub-steps stay consistent. ``cpu=True`` builds the tree
    on the CPU (ComfyUI's plain SDE samplers); ``cpu=False`` on the latent's device (the
    ``*_gpu`` variants), which gives other numbers on a GPU.
    """

    def __init__(
        self, x: torch.Tensor, sigma_min: torch.Tensor, sigma_max: torch.Tensor, seed: int | None = None,
        cpu: bool = True,
    ) -> None:
        """Build the tree between ``sigma_min`` and ``sigma_max`` with entropy ``seed``."""
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        t0, t1, self._sign = _ordered(t0, t1)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, []).item())
        self._cpu = cpu
        w0 = torch.zeros_like(x)
        if cpu:
            self._tree = torchsde.BrownianTree(t0.cpu(), w0.cpu(), t1.cpu(), entropy=seed)
        else:
            self._tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def _increment(self, t0: torch.Tensor, t1: torch.Tensor) -> torch.Tensor:
        """W(t1) - W(t0) with the sign of the direction of travel."""
        t0, t1, sign = _ordered(t0, t1)
        with warnings.catch_warnings():
            # torchsde compares the query with its float64 copy of the float32 end point and
            # warns that sigma_max lies "past" itself; the value it returns is still right.
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            if self._cpu:
                w = self._tree(t0.cpu().float(), t1.cpu().float()).to(t0.dtype).to(t0.device)
            else:
                w = self._tree(t0, t1)
        return w * (self._sign * sign)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """Unit-variance noise for the step from ``sigma`` to ``sigma_next``."""
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        return self._increment(t0, t1) / (t1 - t0).abs().sqrt()


def _ordered(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(low, high, +1)`` or ``(low, high, -1)`` when the pair was given high first."""
    return (a, b, 1) if a < b else (b, a, -1)
