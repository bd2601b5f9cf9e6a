"""Sampler algorithms in sigma space, keyed by ComfyUI's ``sampler_name`` values.

Every entry has the same signature (:class:`~diffusion.sampling.samplers.base.SamplerFn`)
and says which per-step noise it needs, so :func:`diffusion.sampling.sample` can build
the right noise sampler from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diffusion.sampling.samplers.adams import sample_deis, sample_ipndm_v
from diffusion.sampling.samplers.base import Denoiser, SamplerFn, StepCallback, ancestral_step, to_d
from diffusion.sampling.samplers.cfg_pp import (
    sample_dpmpp_2m_cfg_pp,
    sample_dpmpp_2s_ancestral_cfg_pp,
    sample_euler_ancestral_cfg_pp,
    sample_euler_cfg_pp,
)
from diffusion.sampling.samplers.discrete import sample_ddpm, sample_lcm
from diffusion.sampling.samplers.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from diffusion.sampling.samplers.dpmpp import (
    sample_dpmpp_2m_sde,
    sample_dpmpp_2m_sde_heun,
    sample_dpmpp_2s_ancestral,
    sample_dpmpp_3m_sde,
    sample_dpmpp_sde,
)
from diffusion.sampling.samplers.euler import (
    sample_dpm_2,
    sample_dpm_2_ancestral,
    sample_euler,
    sample_euler_ancestral,
    sample_gradient_estimation,
    sample_gradient_estimation_cfg_pp,
    sample_heun,
    sample_heunpp2,
)
from diffusion.sampling.samplers.exponential import (
    sample_er_sde,
    sample_res_multistep,
    sample_res_multistep_ancestral,
    sample_res_multistep_ancestral_cfg_pp,
    sample_res_multistep_cfg_pp,
    sample_seeds_2,
    sample_seeds_3,
)
from diffusion.sampling.samplers.multistep import sample_dpmpp_2m, sample_ipndm, sample_lms
from diffusion.sampling.samplers.sa_solver import sample_sa_solver, sample_sa_solver_pece
from diffusion.sampling.samplers.uni_pc import sample_uni_pc, sample_uni_pc_bh2

#: Which per-step noise a sampler draws: none, ``default`` (a seeded generator) or a Brownian tree (CPU or device).
NoiseKind = Literal["none", "default", "brownian", "brownian_device"]


@dataclass(frozen=True)
class SamplerEntry:
    """One offered sampler: its ComfyUI name, function and per-step noise.

    ``random_inpaint_noise``: the inpaint noise is a fresh draw from seed + 1 instead of
    the initial noise (only ``ddim``, which is otherwise ``euler``). ``wants_schedule``: the
    function takes the model's ``schedule`` keyword (SA-Solver's noise window).
    """

    name: str
    function: SamplerFn
    noise: NoiseKind = "none"
    random_inpaint_noise: bool = False
    wants_schedule: bool = False


_ENTRIES = (
    SamplerEntry("euler", sample_euler),
    SamplerEntry("euler_cfg_pp", sample_euler_cfg_pp),
    SamplerEntry("euler_ancestral", sample_euler_ancestral, "default"),
    SamplerEntry("euler_ancestral_cfg_pp", sample_euler_ancestral_cfg_pp, "default"),
    SamplerEntry("heun", sample_heun),
    SamplerEntry("heunpp2", sample_heunpp2),
    SamplerEntry("dpm_2", sample_dpm_2),
    SamplerEntry("dpm_2_ancestral", sample_dpm_2_ancestral, "default"),
    SamplerEntry("lms", sample_lms),
    SamplerEntry("dpm_fast", sample_dpm_fast, "default"),
    SamplerEntry("dpm_adaptive", sample_dpm_adaptive, "default"),
    SamplerEntry("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral, "default"),
    SamplerEntry("dpmpp_2s_ancestral_cfg_pp", sample_dpmpp_2s_ancestral_cfg_pp, "default"),
    SamplerEntry("dpmpp_sde", sample_dpmpp_sde, "brownian"),
    SamplerEntry("dpmpp_sde_gpu", sample_dpmpp_sde, "brownian_device"),
    SamplerEntry("dpmpp_2m", sample_dpmpp_2m),
    SamplerEntry("dpmpp_2m_cfg_pp", sample_dpmpp_2m_cfg_pp),
    SamplerEntry("dpmpp_2m_sde", sample_dpmpp_2m_sde, "brownian"),
    SamplerEntry("dpmpp_2m_sde_gpu", sample_dpmpp_2m_sde, "brownian_device"),
    SamplerEntry("dpmpp_2m_sde_heun", sample_dpmpp_2m_sde_heun, "brownian"),
    SamplerEntry("dpmpp_2m_sde_heun_gpu", sample_dpmpp_2m_sde_heun, "brownian_device"),
    SamplerEntry("dpmpp_3m_sde", sample_dpmpp_3m_sde, "brownian"),
    SamplerEntry("dpmpp_3m_sde_gpu", sample_dpmpp_3m_sde, "brownian_device"),
    SamplerEntry("ddpm", sample_ddpm, "default"),
    SamplerEntry("lcm", sample_lcm, "default"),
    SamplerEntry("ipndm", sample_ipndm),
    SamplerEntry("ipndm_v", sample_ipndm_v),
    SamplerEntry("deis", sample_deis),
    SamplerEntry("res_multistep", sample_res_multistep, "default"),
    SamplerEntry("res_multistep_cfg_pp", sample_res_multistep_cfg_pp, "default"),
    SamplerEntry("res_multistep_ancestral", sample_res_multistep_ancestral, "default"),
    SamplerEntry("res_multistep_ancestral_cfg_pp", sample_res_multistep_ancestral_cfg_pp, "default"),
    SamplerEntry("gradient_estimation", sample_gradient_estimation),
    SamplerEntry("gradient_estimation_cfg_pp", sample_gradient_estimation_cfg_pp),
    SamplerEntry("er_sde", sample_er_sde, "default"),
    SamplerEntry("seeds_2", sample_seeds_2, "default"),
    SamplerEntry("seeds_3", sample_seeds_3, "default"),
    SamplerEntry("sa_solver", sample_sa_solver, "default", wants_schedule=True),
    SamplerEntry("sa_solver_pece", sample_sa_solver_pece, "default", wants_schedule=True),
    SamplerEntry("ddim", sample_euler, random_inpaint_noise=True),
    SamplerEntry("uni_pc", sample_uni_pc),
    SamplerEntry("uni_pc_bh2", sample_uni_pc_bh2),
)

SAMPLERS: dict[str, SamplerEntry] = {entry.name: entry for entry in _ENTRIES}

#: The sampler names we implement, in ComfyUI's ``KSampler.SAMPLERS`` order (all 42 of 0.3.64).
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)


def get_sampler(name: str) -> SamplerEntry:
    """The entry for a ComfyUI sampler name; ``ValueError`` names the ones we offer."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLER_NAMES)}") from None


__all__ = [
    "SAMPLERS",
    "SAMPLER_NAMES",
    "Denoiser",
    "NoiseKind",
    "SamplerEntry",
    "SamplerFn",
    "StepCallback",
    "ancestral_step",
    "get_sampler",
    "to_d",
]
