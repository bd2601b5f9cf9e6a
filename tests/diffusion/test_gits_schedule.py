"""GITS schedules: the published table, ComfyUI's choice of row, the >20-step interpolation and denoise."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffusion.sampling.gits import TABLE_STEPS, gits_noise_levels, gits_schedule, gits_table

#: Rows read by hand from the published table (coeff 1.20 and 0.80), last sigma as published.
ROW_120_10 = [14.61464119, 5.85520077, 2.84484982, 1.67050016, 1.08895338, 0.74807048, 0.50118381, 0.32104823,
              0.19894916, 0.09824532, 0.02916753]
ROW_120_20 = [14.61464119, 7.49001646, 4.65472794, 3.07277966, 2.19988537, 1.61558151, 1.24153244, 0.95350921,
              0.74807048, 0.59516323, 0.50118381, 0.41087446, 0.34370604, 0.29807833, 0.25053367, 0.22545385,
              0.19894916, 0.17026083, 0.13792117, 0.09824532, 0.02916753]


def test_the_table_has_every_coefficient_and_step_count() -> None:
    table = gits_table()
    assert list(table) == [f"{0.80 + 0.05 * i:.2f}" for i in range(15)]
    for rows in table.values():
        assert sorted(rows) == list(range(2, TABLE_STEPS + 1))
        for steps, row in rows.items():
            assert len(row) == steps + 1 and row[0] == 14.61464119 and row[-1] == 0.02916753
            assert all(a > b for a, b in itertools.pairwise(row))


@pytest.mark.parametrize(("coeff", "steps", "expected"), [
    (1.20, 10, ROW_120_10),
    (0.80, 2, [14.61464119, 7.49001646, 0.02916753]),
    (1.50, 3, [14.61464119, 0.803307, 0.25053367, 0.02916753]),
    (1.00, 5, [14.61464119, 7.11996698, 3.07277966, 1.56271636, 0.59516323, 0.02916753]),
    (1.20, 20, ROW_120_20),
])
def test_up_to_20_steps_the_row_is_used(coeff: float, steps: int, expected: list[float]) -> None:
    sigmas = gits_schedule(coeff, steps)
    assert sigmas.dtype == torch.float32
    assert sigmas.tolist() == torch.tensor([*expected[:-1], 0.0], dtype=torch.float32).tolist()


def test_coeff_is_rounded_to_two_decimals_and_others_are_refused() -> None:
    assert torch.equal(gits_schedule(1.2000001, 10), gits_schedule(1.20, 10))
    with pytest.raises(ValueError, match=r"coeff 0\.83"):
        gits_schedule(0.83, 10)
    with pytest.raises(ValueError, match="at least 2 steps"):
        gits_schedule(1.20, 1)


def test_beyond_20_steps_the_20_step_row_is_interpolated_in_log_sigma() -> None:
    levels = gits_noise_levels(1.20, 30)
    assert len(levels) == 31
    # Point i of 31 sits at 20 * i / 30 along the 21 published sigmas: i = 3 lands on row entry 2 exactly.
    for i in (0, 1, 3, 17, 29, 30):
        position = TABLE_STEPS * i / 30
        low = math.floor(position)
        high = min(low + 1, TABLE_STEPS)
        w = position - low
        expected = math.exp((1 - w) * math.log(ROW_120_20[low]) + w * math.log(ROW_120_20[high]))
        assert levels[i] == pytest.approx(expected, rel=1e-12)
    sigmas = gits_schedule(1.20, 30)
    assert sigmas[3] == pytest.approx(4.65472794, rel=1e-7) and sigmas[-1] == 0 and len(sigmas) == 31


def test_denoise_keeps_the_tail_of_the_same_schedule() -> None:
    full = gits_schedule(1.20, 10)
    # round(10 * 0.5) = 5 steps: the last 6 sigmas of the 10-step row (not a longer schedule).
    assert torch.equal(gits_schedule(1.20, 10, 0.5), full[-6:])
    # Python's rounding: round(2.5) == 2.
    assert gits_schedule(1.20, 10, 0.25).tolist() == pytest.approx([0.19894916, 0.09824532, 0.0])
    assert torch.equal(gits_schedule(1.20, 30, 0.5), gits_schedule(1.20, 30)[-16:])
    assert gits_schedule(1.20, 10, 0.0).shape == (0,)
    # A denoise that keeps no step leaves the final sigma alone, as ComfyUI's does.
    assert gits_schedule(1.20, 10, 0.01).tolist() == [0.0]
