"""ComfyUI's ``comfy.samplers``: the sampler and scheduler names (``KSampler.SAMPLERS``/``SCHEDULERS``)."""

from __future__ import annotations

from diffusion.sampling import SAMPLER_NAMES as _SAMPLERS
from diffusion.sampling import SCHEDULER_NAMES as _SCHEDULERS

from .. import missing

__getattr__ = missing("comfy.samplers")

#: Every sampler name (a list, as ComfyUI's: packs append to it).
SAMPLER_NAMES: list[str] = list(_SAMPLERS)
#: Every scheduler name.
SCHEDULER_NAMES: list[str] = list(_SCHEDULERS)
KSAMPLER_NAMES = [n for n in SAMPLER_NAMES if n not in ("ddim", "uni_pc", "uni_pc_bh2")]


class KSampler:
    """ComfyUI's ``comfy.samplers.KSampler``: here, its name lists (``SAMPLERS``, ``SCHEDULERS``)."""

    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AttributeError("noodlebox does not provide ComfyUI's comfy.samplers.KSampler objects "
                             "(use nodes.common_ksampler or comfy.sample.sample)")
