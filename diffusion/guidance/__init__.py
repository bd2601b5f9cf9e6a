"""Guidance: the GUIDER values of custom sampling (CFG, basic, dual CFG, perp-neg) and running them.

:mod:`diffusion.guidance.guiders` holds the guiders, :mod:`diffusion.guidance.run` samples a
LATENT with a guider, a NOISE, a SAMPLER and SIGMAS (ComfyUI's SamplerCustomAdvanced).
"""

from diffusion.guidance.guiders import BasicGuider, CFGGuider, DualCFGGuider, Guider, PerpNegGuider, perp_neg
from diffusion.guidance.run import sample_with_guider

__all__ = ["BasicGuider", "CFGGuider", "DualCFGGuider", "Guider", "PerpNegGuider", "perp_neg", "sample_with_guider"]
