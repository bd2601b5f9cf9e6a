"""GITS schedules: noise levels searched per step budget (ComfyUI's ``GITSScheduler``).

Provenance: the tables in ``gits_sigmas.json`` are published numerical data from Chen et
al., "On the Trajectory Regularity of ODE-based Diffusion Sampling" (ICML 2024; the
authors' code is github.com/zju-pi/diff-sampler, ``gits-main``), in the form ComfyUI
0.3.64 ships them: for each coefficient 0.80, 0.85, ... 1.50 and each step count 2..20, the
``steps + 1`` sigmas of an SD1-range model, highest first. The file holds the numbers
only; how a schedule is picked from them is written here.

Selection, as ComfyUI's node behaves: the table's row for ``(coeff, steps)`` up to 20
steps; beyond, the 20-step row resampled to ``steps + 1`` points linearly in log sigma.
``denoise`` < 1 keeps the last ``round(steps * denoise)`` steps of that ``steps``-step
schedule; ``denoise`` <= 0 gives no sigmas. The last sigma is always replaced by 0.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import numpy as np
import torch

from diffusion.sampling.sigma_tools import loglinear_interp

#: The most steps a table row exists for; longer schedules are interpolated from that row.
TABLE_STEPS = 20


@cache
def gits_table() -> dict[str, dict[int, tuple[float, ...]]]:
    """The published noise levels: ``{coeff as "1.20": {steps: sigmas}}`` (read once from the package data)."""
    text = resources.files("diffusion.sampling").joinpath("gits_sigmas.json").read_text(encoding="utf-8")
    raw = json.loads(text)["sigmas"]
    return {coeff: {int(steps): tuple(row) for steps, row in rows.items()} for coeff, rows in raw.items()}


def gits_noise_levels(coeff: float, steps: int) -> np.ndarray:
    """The ``steps + 1`` GITS sigmas for ``coeff`` (float64, highest first, the table's last sigma kept).

    ``coeff`` must be one of the table's (0.80 to 1.50 in steps of 0.05, after rounding
    to two decimals); ``steps`` at least 2.
    """
    table = gits_table()
    key = f"{round(coeff, 2):.2f}"
    if key not in table:
        raise ValueError(f"GITS has no noise levels for coeff {coeff}; use 0.80 to 1.50 in steps of 0.05")
    if steps < 2:
        raise ValueError(f"GITS needs at least 2 steps, got {steps}")
    if steps <= TABLE_STEPS:
        return np.array(table[key][steps], dtype=np.float64)
    return loglinear_interp(table[key][TABLE_STEPS], steps + 1)


def gits_schedule(coeff: float, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """GITSScheduler's sigmas: float32, ending in 0; the tail of the ``steps`` schedule when ``denoise`` < 1."""
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    kept = steps if denoise >= 1.0 else round(steps * denoise)
    levels = gits_noise_levels(coeff, steps)[-(kept + 1):].copy()
    levels[-1] = 0.0
    return torch.tensor(levels, dtype=torch.float32)
