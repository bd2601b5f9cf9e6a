"""workflows/unclip.json: an SD2.1 unCLIP checkpoint made as the Makefile makes it, steered by an image."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from models_kit import REPO, WORKFLOWS
from PIL import Image

from server.cli import main


def make_unclip_checkpoint(base: Path) -> Path:
    """Run the Makefile's make-checkpoint line for $(UNCLIP_CKPT), into ``base``."""
    text = (REPO / "Makefile").read_text()
    name = re.search(r"^UNCLIP_CKPT := models/checkpoints/(\S+)$", text, re.M)
    recipe = re.search(r"^\t\$\(BIN\)/noodlebox (make-checkpoint --arch sd2-unclip .*) \$@$", text, re.M)
    assert name and recipe
    out = base / "models" / "checkpoints" / name.group(1)
    assert main([*recipe.group(1).split(), str(out)]) == 0
    return out


def run(base: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> tuple[np.ndarray, list[str]]:
    sets = [a for o in ("3.steps=2", "5.width=64", "5.height=64", *overrides) for a in ("--set", o)]
    code = main(["run", str(WORKFLOWS / "unclip.json"), "--base-dir", str(base), "--json", *sets])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])["data"]
    assert result["status"] == "success"
    with Image.open(result["images"][-1]) as image:
        return np.asarray(image.convert("RGB")).astype(int), result["executed"]


def test_unclip_workflow_is_steered_by_the_image(tmp_path: Path, capsys) -> None:
    (tmp_path / "input").mkdir()
    shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", tmp_path / "input")
    make_unclip_checkpoint(tmp_path)
    first, executed = run(tmp_path, capsys)
    assert {"4", "11", "12", "3"} <= set(executed) and first.shape == (64, 64, 3)
    again, _ = run(tmp_path, capsys, "3.seed=1096212426473640")
    assert np.array_equal(first, again)  # the augmentation noise comes from the seed
    noisier, _ = run(tmp_path, capsys, "12.noise_augmentation=0.9")
    without, _ = run(tmp_path, capsys, "12.strength=0")
    assert np.abs(first - noisier).mean() > 0.5 and np.abs(first - without).mean() > 0.5
