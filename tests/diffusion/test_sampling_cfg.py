"""CFG combination and the cfg == 1 shortcut against ComfyUI's ``cfg`` reference section."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.sampling import cfg_combine, guided_denoiser, prepare_noise, skips_uncond

REFERENCE = Path("/work/shared/reference/comfy_reference_vectors.json")


@cache
def reference() -> dict[str, Any]:
    """The ``cfg`` section of ComfyUI's reference vectors."""
    if not REFERENCE.exists():
        pytest.skip("ComfyUI reference vectors not available")
    return json.loads(REFERENCE.read_text())["cfg"]


def toy(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The reference's toy denoiser."""
    s = sigma.view(-1, 1, 1, 1)
    return x / (1 + s**2) + 0.1 * torch.tanh(x) * s / (1 + s)


def setup() -> tuple[torch.Tensor, torch.Tensor]:
    """x and sigma exactly as the reference builds them."""
    ref = reference()
    sigma = torch.ones([1]) * ref["sigma"]
    x = prepare_noise(torch.zeros([1, 4, 4, 4]), 42) * torch.tensor(ref["sigma"], dtype=torch.float32)
    assert x.flatten()[:8].tolist() == ref["x_first8"]
    return x, sigma


def test_inputs_match_the_reference() -> None:
    x, sigma = setup()
    assert toy(x, sigma).flatten()[:8].tolist() == reference()["cond_pred_first8"]
    assert (0.9 * toy(x, sigma)).flatten()[:8].tolist() == reference()["uncond_pred_first8"]


@pytest.mark.parametrize("case", range(6))
def test_cfg_matches_comfyui_exactly(case: int) -> None:
    ref = reference()["cases"][case]
    x, sigma = setup()
    cond, uncond = toy(x, sigma), 0.9 * toy(x, sigma)
    assert cfg_combine(cond, uncond, ref["cfg"]).flatten()[:8].tolist() == ref["cfg_function_first8"]

    uncond_calls: list[int] = []

    def predict_uncond(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        uncond_calls.append(1)
        return 0.9 * toy(x, sigma)

    denoiser = guided_denoiser(toy, predict_uncond, ref["cfg"], ref["disable_cfg1_optimization"])
    result = denoiser(x, sigma)
    assert result.flatten()[:8].tolist() == ref["sampling_function_first8"]
    assert bool(uncond_calls) == ref["uncond_pass_ran"]
    assert torch.equal(result, cond) == ref["sampling_function_equals_cond_pred_exactly"]


def test_cfg1_shortcut_uses_isclose() -> None:
    assert skips_uncond(1.0)
    assert skips_uncond(1.0 + 1e-12)
    assert not skips_uncond(1.01)
    assert not skips_uncond(1.0, disable_cfg1_optimization=True)
