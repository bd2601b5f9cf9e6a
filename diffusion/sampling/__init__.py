"""Sampling as ComfyUI does it: the discrete schedule, the nine schedulers, seeded noise,
the samplers under their ComfyUI names, CFG and the ``sample`` entry point.

Everything works in sigma space on latents in model space (VAE latent times the
model's scale factor); see :mod:`diffusion.sampling.sample` for the denoiser contract.
"""

from diffusion.sampling.cfg import cfg_combine, guided_denoiser, skips_uncond
from diffusion.sampling.noise import BrownianTreeNoiseSampler, NoiseSampler, default_noise_sampler, prepare_noise
from diffusion.sampling.sample import DenoiseFn, prepare_denoise_mask, sample
from diffusion.sampling.samplers import SAMPLER_NAMES, SAMPLERS, SamplerEntry, StepCallback, get_sampler
from diffusion.sampling.schedule import DiscreteSchedule, process_latent_in, process_latent_out
from diffusion.sampling.schedulers import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SCHEDULER_NAMES,
    calculate_sigmas,
    ksampler_sigmas,
    slice_sigmas,
)

__all__ = [
    "DISCARD_PENULTIMATE_SIGMA_SAMPLERS",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "BrownianTreeNoiseSampler",
    "DenoiseFn",
    "DiscreteSchedule",
    "NoiseSampler",
    "SamplerEntry",
    "StepCallback",
    "calculate_sigmas",
    "cfg_combine",
    "default_noise_sampler",
    "get_sampler",
    "guided_denoiser",
    "ksampler_sigmas",
    "prepare_denoise_mask",
    "prepare_noise",
    "process_latent_in",
    "process_latent_out",
    "sample",
    "skips_uncond",
    "slice_sigmas",
]
