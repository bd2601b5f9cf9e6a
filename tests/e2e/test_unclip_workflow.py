"""workflows/unclip.json: an SD2.1 unCLIP checkpoint made as the Makefile makes it, steered by an image."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from models_kit import WORKFLOWS, make_as_makefile, run_workflow

SMALL = ("3.steps=2", "5.width=64", "5.height=64")


def test_unclip_workflow_is_steered_by_the_image(tmp_path: Path, capsys) -> None:
    (tmp_path / "input").mkdir()
    shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", tmp_path / "input")
    make_as_makefile(tmp_path, "UNCLIP_CKPT", "sd2-unclip")
    first, executed = run_workflow(tmp_path, capsys, "unclip.json", *SMALL)
    assert {"4", "11", "12", "3"} <= set(executed) and first.shape == (64, 64, 3)
    again, _ = run_workflow(tmp_path, capsys, "unclip.json", *SMALL, "3.seed=1096212426473640")
    assert np.array_equal(first, again)  # the augmentation noise comes from the seed
    noisier, _ = run_workflow(tmp_path, capsys, "unclip.json", *SMALL, "12.noise_augmentation=0.9")
    without, _ = run_workflow(tmp_path, capsys, "unclip.json", *SMALL, "12.strength=0")
    assert np.abs(first - noisier).mean() > 0.5 and np.abs(first - without).mean() > 0.5
