"""The sigma table, the nine schedulers and KSampler's slicing against ComfyUI's own numbers."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.sampling import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS,
    SCHEDULER_NAMES,
    DiscreteSchedule,
    calculate_sigmas,
    ksampler_sigmas,
    slice_sigmas,
)

REFERENCE = Path("/work/shared/reference/comfy_reference_vectors.json")


@cache
def reference() -> dict[str, Any]:
    """The ``sigmas`` section of ComfyUI's reference vectors."""
    if not REFERENCE.exists():
        pytest.skip("ComfyUI reference vectors not available")
    return json.loads(REFERENCE.read_text())["sigmas"]


def as_tensor(values: list[Any]) -> torch.Tensor:
    """Reference floats (NaN as a string) as a float64 tensor."""
    return torch.tensor([math.nan if v == "NaN" else v for v in values], dtype=torch.float64)


def assert_sigmas(actual: torch.Tensor, expected: list[Any]) -> None:
    """Same length and every value within 1e-6 relative (NaN where NaN is expected)."""
    assert actual.dtype == torch.float32
    assert len(actual) == len(expected)
    torch.testing.assert_close(actual.double(), as_tensor(expected), rtol=1e-6, atol=0, equal_nan=True)


SCHEDULE = DiscreteSchedule()


def test_table_is_comfyuis_to_the_bit() -> None:
    ref = reference()
    assert torch.equal(SCHEDULE.sigmas, torch.tensor(ref["sigma_table_float32"]))
    assert torch.equal(SCHEDULE.log_sigmas, torch.tensor(ref["log_sigma_table_float32"]))
    assert float(SCHEDULE.sigma_min) == ref["sigma_min"]
    assert float(SCHEDULE.sigma_max) == ref["sigma_max"]


def test_scheduler_names_in_comfyuis_order() -> None:
    assert list(SCHEDULER_NAMES) == reference()["scheduler_names"]
    assert set(DISCARD_PENULTIMATE_SIGMA_SAMPLERS) == set(reference()["discard_penultimate_sigma_samplers"])


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_schedule_matches(name: str) -> None:
    for steps, expected in reference()["schedules"][name].items():
        assert_sigmas(calculate_sigmas(SCHEDULE, name, int(steps)), expected)


def test_step_counts_that_differ_from_the_request() -> None:
    # ddim_uniform strides by an integer and may give more steps; beta drops repeated timesteps.
    for name, counts in reference()["num_steps_actually_produced_for_other_step_counts"].items():
        for steps, produced in counts.items():
            assert len(calculate_sigmas(SCHEDULE, name, int(steps))) - 1 == produced, (name, steps)


def test_kl_optimal_with_one_step_is_nan_like_comfyui() -> None:
    assert math.isnan(float(calculate_sigmas(SCHEDULE, "kl_optimal", 1)[0]))


def test_unknown_scheduler_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
        calculate_sigmas(SCHEDULE, "nope", 4)


@pytest.mark.parametrize("case", range(17))
def test_ksampler_cases(case: int) -> None:
    ref = reference()["ksampler_cases"][case]
    sigmas = ksampler_sigmas(SCHEDULE, ref["scheduler"], ref["sampler"], ref["steps"], ref["denoise"])
    assert_sigmas(sigmas, ref["ksampler_sigmas"])
    if ref["node"] == "KSamplerAdvanced":
        before = sigmas.clone()
        passed = slice_sigmas(sigmas, ref["start_step"], ref["last_step"], ref["force_full_denoise"])
        # ComfyUI zeroes its own tensor in place; ours is left as it was.
        assert torch.equal(sigmas, before)
    else:
        passed = sigmas
    if ref["sigmas_passed_to_sampler"] is None:
        assert passed is None
    else:
        assert passed is not None
        assert_sigmas(passed, ref["sigmas_passed_to_sampler"])


def test_timestep_and_sigma_round_trip() -> None:
    t = torch.tensor([0, 1, 500, 999])
    assert torch.equal(SCHEDULE.timestep(SCHEDULE.sigma(t)), t)
    # Fractional timesteps interpolate in log sigma.
    low, mid, high = (float(SCHEDULE.sigma(torch.tensor(t))) for t in (499.0, 499.5, 500.0))
    assert low < mid < high
    assert mid == pytest.approx(math.sqrt(low * high), rel=1e-6)
    assert SCHEDULE.percent_to_sigma(0.0) > 1e8
    assert SCHEDULE.percent_to_sigma(1.0) == 0.0
    assert SCHEDULE.percent_to_sigma(0.5) == pytest.approx(float(SCHEDULE.sigma(torch.tensor(499.5))))
