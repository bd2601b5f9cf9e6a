"""workflows/inpaint_model.json: InpaintModelConditioning on a 9-channel checkpoint made as the Makefile makes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from models_kit import WORKFLOWS, make_as_makefile, run_workflow
from PIL import Image


def run(base: Path, capsys: pytest.CaptureFixture[str], seed: int) -> np.ndarray:
    pixels, executed = run_workflow(base, capsys, "inpaint_model.json", "3.steps=2", f"3.seed={seed}")
    assert "11" in executed
    return pixels


def test_inpaint_model_workflow_repaints_under_the_mask_only(tmp_path: Path, capsys) -> None:
    (tmp_path / "input").mkdir()
    source = shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", tmp_path / "input")
    make_as_makefile(tmp_path, "INPAINT_CKPT", "sd15-inpaint")
    first, second = run(tmp_path, capsys, 1), run(tmp_path, capsys, 2)
    with Image.open(source) as image:
        hole = np.asarray(image.getchannel("A")) == 0
    assert first.shape == (*hole.shape, 3)
    # Away from the hole (the VAE's reach aside) the kept latent decodes the same for any seed.
    grown = np.zeros_like(hole)
    ys, xs = np.nonzero(hole)
    grown[max(0, ys.min() - 64):ys.max() + 64, max(0, xs.min() - 64):xs.max() + 64] = True
    changed = np.abs(first - second).mean(axis=-1)
    assert changed[~grown].mean() < 1.0
    assert changed[hole].mean() > 5 * max(changed[~grown].mean(), 0.2)
