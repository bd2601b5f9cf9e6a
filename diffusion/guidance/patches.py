"""Guidance patches: the hooks that ComfyUI's guidance nodes put in a MODEL's ``options``.

Each factory returns one hook of :func:`diffusion.sampling.cfg.guide`'s kinds (its args
dict is documented there): a ``sampler_cfg_function`` (returns ``x - denoised``), a
``sampler_pre_cfg_function`` (returns the new ``[cond, uncond, ...]`` predictions) or a
``sampler_post_cfg_function`` (returns the new denoised prediction).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

Hook = Callable[[Mapping[str, Any]], Any]


def rescale_cfg(multiplier: float) -> Hook:
    """CFG rescaled towards the positive prediction's standard deviation (arXiv 2305.08891), in v space.

    At ``multiplier`` 0 it is plain CFG (up to rounding of the v-space round trip).
    """

    def cfg_function(args: Mapping[str, Any]) -> torch.Tensor:
        cond, uncond, scale, x_orig = args["cond"], args["uncond"], args["cond_scale"], args["input"]
        sigma = args["sigma"].view(args["sigma"].shape[:1] + (1,) * (cond.ndim - 1))
        x = x_orig / (sigma * sigma + 1.0)
        v_cond = ((x - (x_orig - cond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        v_uncond = ((x - (x_orig - uncond)) * (sigma**2 + 1.0) ** 0.5) / sigma
        v_cfg = v_uncond + scale * (v_cond - v_uncond)
        rescaled = v_cfg * (torch.std(v_cond, dim=(1, 2, 3), keepdim=True)
                            / torch.std(v_cfg, dim=(1, 2, 3), keepdim=True))
        final = multiplier * rescaled + (1.0 - multiplier) * v_cfg
        return x_orig - (x - final * sigma / (sigma * sigma + 1.0) ** 0.5)

    return cfg_function


def _optimized_scale(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """The per-sample least-squares scale of ``negative`` onto ``positive``."""
    pos = positive.reshape(positive.shape[0], -1)
    neg = negative.reshape(negative.shape[0], -1)
    scale = torch.sum(pos * neg, dim=1, keepdim=True) / (torch.sum(neg**2, dim=1, keepdim=True) + 1e-8)
    return scale.reshape([positive.shape[0]] + [1] * (positive.ndim - 1))


def cfg_zero_star() -> Hook:
    """CFG-Zero* (arXiv 2503.18886): the negative prediction scaled by its optimal projection on the positive."""

    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        x, cond, uncond, scale = args["input"], args["cond_denoised"], args["uncond_denoised"], args["cond_scale"]
        alpha = _optimized_scale(x - cond, x - uncond)
        return args["denoised"] + uncond * (alpha - 1.0) + scale * uncond * (1.0 - alpha)

    return post_cfg


def cfg_norm(strength: float) -> Hook:
    """Caps the guided prediction's per-pixel channel norm at the positive prediction's, times ``strength``."""

    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        guided = args["denoised"]
        norm_cond = torch.norm(args["cond_denoised"], dim=1, keepdim=True)
        norm_guided = torch.norm(guided, dim=1, keepdim=True)
        return guided * (norm_cond / (norm_guided + 1e-8)).clamp(min=0.0, max=1.0) * strength

    return post_cfg


def mahiro() -> Hook:
    """Mahiro guidance: mixes CFG with the scaled positive by how alike the scaled negative and their mean are."""

    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        scale, guided = args["cond_scale"], args["denoised"]
        leap = args["cond_denoised"] * scale
        u_leap = args["uncond_denoised"] * scale
        merge = (leap + guided) / 2
        norm_u = torch.sqrt(u_leap.abs()) * u_leap.sign()
        norm_m = torch.sqrt(merge.abs()) * merge.sign()
        similarity = 2 * (F.cosine_similarity(norm_u, norm_m).mean() + 1)
        return (similarity * guided + (4 - similarity) * leap) / 4

    return post_cfg


def epsilon_scaling(scaling_factor: float) -> Hook:
    """Divides the predicted noise by ``scaling_factor`` (exposure-bias correction, arXiv 2308.15321)."""

    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        x = args["input"]
        return x - (x - args["denoised"]) / scaling_factor

    return post_cfg


def _both(args: Mapping[str, Any]) -> bool:
    """True when the step has both a positive and a negative prediction to work on."""
    return len(args["conds_out"]) > 1 and None not in args["conds"][:2]


def tangential_damping() -> Hook:
    """TCFG (arXiv 2503.18137): keeps only the negative score's component along the main singular direction."""

    def pre_cfg(args: Mapping[str, Any]) -> list[torch.Tensor]:
        outputs = list(args["conds_out"])
        if not _both(args):
            return outputs
        x, cond, uncond = args["input"], outputs[0], outputs[1]
        batch = cond.shape[0]
        cond_flat = (x - cond).reshape(batch, 1, -1).float()
        uncond_flat = (x - uncond).reshape(batch, 1, -1).float()
        _, _, vh = torch.linalg.svd(torch.cat((uncond_flat, cond_flat), dim=1), full_matrices=False)
        v1 = vh[:, 0:1, :]
        damped = ((uncond_flat @ v1.transpose(-2, -1)) * v1).reshape_as(uncond).to(uncond.dtype)
        return [cond, x - damped, *outputs[2:]]

    return pre_cfg


def _project(v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``v0``'s parts parallel and orthogonal to ``v1`` (per sample)."""
    dtype = v0.dtype
    v0, v1 = v0.double(), v1.double()
    v1 = F.normalize(v1, dim=[-1, -2, -3])
    parallel = (v0 * v1).sum(dim=[-1, -2, -3], keepdim=True) * v1
    return parallel.to(dtype), (v0 - parallel).to(dtype)


def adaptive_projected_guidance(eta: float, norm_threshold: float, momentum: float) -> Hook:
    """APG (arXiv 2410.02416): the guidance's part parallel to the positive scaled by ``eta``, with a norm cap
    and momentum (reset when sigma rises, i.e. a new run)."""
    state: dict[str, Any] = {"avg": None, "sigma": None}

    def pre_cfg(args: Mapping[str, Any]) -> list[torch.Tensor]:
        outputs = list(args["conds_out"])
        if len(outputs) == 1:
            return outputs
        cond, uncond, scale = outputs[0], outputs[1], args["cond_scale"]
        sigma = float(args["sigma"][0])
        if state["sigma"] is not None and sigma > state["sigma"]:
            state["avg"] = None
        state["sigma"] = sigma
        guidance = cond - uncond
        if momentum != 0:
            state["avg"] = guidance if state["avg"] is None else momentum * state["avg"] + guidance
            guidance = state["avg"]
        if norm_threshold > 0:
            norm = guidance.norm(p=2, dim=[-1, -2, -3], keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), norm_threshold / norm)
        parallel, orthogonal = _project(guidance, cond)
        return [(uncond + (orthogonal + eta * parallel)) + (cond - uncond) / scale, uncond, *outputs[2:]]

    return pre_cfg


def fourier_filter(x: torch.Tensor, scale_low: float, scale_high: float, freq_cutoff: int) -> torch.Tensor:
    """Scale ``x``'s centred low frequencies (a square of half-width ``freq_cutoff``) and the rest separately."""
    dtype = x.dtype
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(freq.shape, device=x.device) * scale_high
    crow, ccol = freq.shape[-2] // 2, freq.shape[-1] // 2
    mask[..., crow - freq_cutoff:crow + freq_cutoff, ccol - freq_cutoff:ccol + freq_cutoff] = scale_low
    filtered = torch.fft.ifftn(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(dtype)


def fresca(scale_low: float, scale_high: float, freq_cutoff: int) -> Hook:
    """FreSca (arXiv 2504.02154): the guidance filtered in frequency space before CFG."""

    def pre_cfg(args: Mapping[str, Any]) -> list[torch.Tensor]:
        outputs = list(args["conds_out"])
        if not _both(args):
            return outputs
        cond, uncond = outputs[0], outputs[1]
        filtered = fourier_filter(cond - uncond, scale_low, scale_high, freq_cutoff)
        return [filtered + uncond, uncond, *outputs[2:]]

    return pre_cfg


def differential_diffusion(strength: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor, Mapping[str, Any]], Any]:
    """A ``denoise_mask_function``: each step regenerates only where the mask is above the step's progress.

    The threshold runs from 1 at the first sigma to 0 at the last (timestep-linear), so a
    soft mask becomes a schedule of hard ones; ``strength`` < 1 blends that with the soft mask.
    """

    def mask_function(sigma: torch.Tensor, mask: torch.Tensor, extra: Mapping[str, Any]) -> torch.Tensor:
        schedule, sigmas = extra["schedule"], extra["sigmas"]
        sigma_to = max(float(schedule.sigma_min), float(sigmas[-1]))
        ts_from = schedule.timestep(sigmas[0].reshape(1).cpu())
        ts_to = schedule.timestep(torch.tensor([sigma_to]))
        current = schedule.timestep(sigma[:1].cpu())
        threshold = ((current - ts_to) / (ts_from - ts_to)).to(mask.device)
        binary = (mask >= threshold).to(mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * mask
        return binary

    return mask_function
