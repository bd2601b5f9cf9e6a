"""Seeded noise: bit-exact with ComfyUI's prepare_noise and its per-step noise samplers."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.sampling import (
    BrownianTreeNoiseSampler,
    DiscreteSchedule,
    calculate_sigmas,
    default_noise_sampler,
    prepare_noise,
)

REFERENCE = Path("/work/shared/reference/comfy_reference_vectors.json")


@cache
def reference() -> dict[str, Any]:
    """ComfyUI's reference vectors."""
    if not REFERENCE.exists():
        pytest.skip("ComfyUI reference vectors not available")
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("case", range(18))
def test_prepare_noise_is_bit_exact(case: int) -> None:
    ref = reference()["noise"]["cases"][case]
    noise = prepare_noise(torch.zeros(ref["shape"]), int(ref["seed"]), ref["noise_inds"])
    assert list(noise.shape) == ref["shape"]
    assert noise.dtype == torch.float32
    assert noise.flatten()[:16].tolist() == ref["first16"]
    assert noise.double().sum().item() == pytest.approx(ref["sum_f64"], abs=1e-9)
    assert (noise.double() ** 2).sum().item() == pytest.approx(ref["sumsq_f64"], abs=1e-9)
    if "second_item_first4" in ref:
        assert noise[1].flatten()[:4].tolist() == ref["second_item_first4"]


def test_batch_index_gives_items_the_noise_they_had_in_the_full_batch() -> None:
    full = prepare_noise([4, 4, 8, 8], 123, batch_index=[0, 1, 2, 3])
    picked = prepare_noise([2, 4, 8, 8], 123, batch_index=[3, 1])
    assert torch.equal(picked[0], full[3])
    assert torch.equal(picked[1], full[1])
    # [0, 1] draws exactly what one draw for the whole batch gives.
    assert torch.equal(prepare_noise([2, 4, 8, 8], 5, [0, 1]), prepare_noise([2, 4, 8, 8], 5))


def test_only_the_low_32_bits_of_the_seed_count() -> None:
    assert torch.equal(prepare_noise([1, 4, 4, 4], 7), prepare_noise([1, 4, 4, 4], 2**32 + 7))
    assert not torch.equal(prepare_noise([1, 4, 4, 4], 7), prepare_noise([1, 4, 4, 4], 8))


def test_first_ancestral_noise_repeats_the_initial_noise() -> None:
    samplers = reference()["samplers"]
    assert samplers["fact_first_ancestral_noise_equals_initial_noise"] is True
    x = torch.zeros([1, 4, 4, 4])
    draw = default_noise_sampler(x, seed=42)
    first = draw(torch.tensor(14.6), torch.tensor(6.0))
    assert first.flatten().tolist() == samplers["initial_noise_seed42_1x4x4x4"]
    assert torch.equal(first, prepare_noise(x, 42))
    assert not torch.equal(draw(torch.tensor(6.0), torch.tensor(2.0)), first)


def test_brownian_tree_matches_comfyui() -> None:
    ref = reference()["samplers"]["brownian_tree_seed42_first_call_first8"]
    sigmas = calculate_sigmas(DiscreteSchedule(), "karras", 6)
    sampler = BrownianTreeNoiseSampler(torch.zeros([1, 4, 4, 4]), sigmas[sigmas > 0].min(), sigmas.max(), seed=42)
    assert sampler(sigmas[0], sigmas[1]).flatten()[:8].tolist() == ref["values"]


def test_brownian_tree_increments_add_up() -> None:
    """W(a)-W(c) = (W(a)-W(b)) + (W(b)-W(c)): sub-steps see noise consistent with their step."""
    x = torch.zeros([1, 4, 4, 4])
    tree = BrownianTreeNoiseSampler(x, torch.tensor(0.1), torch.tensor(10.0), seed=3)
    a, b, c = torch.tensor(8.0), torch.tensor(4.0), torch.tensor(1.0)
    whole = tree(a, c) * (a - c).sqrt()
    parts = tree(a, b) * (a - b).sqrt() + tree(b, c) * (b - c).sqrt()
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-5)
    again = BrownianTreeNoiseSampler(x, torch.tensor(0.1), torch.tensor(10.0), seed=3)
    assert torch.equal(again(a, c), tree(a, c))
