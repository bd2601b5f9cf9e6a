"""workflows/inpaint_model.json: InpaintModelConditioning on a 9-channel checkpoint made as the Makefile makes it."""

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


def make_inpaint_checkpoint(base: Path) -> Path:
    """Run the Makefile's make-checkpoint line for $(INPAINT_CKPT), into ``base``."""
    text = (REPO / "Makefile").read_text()
    name = re.search(r"^INPAINT_CKPT := models/checkpoints/(\S+)$", text, re.M)
    recipe = re.search(r"^\t\$\(BIN\)/noodlebox (make-checkpoint --arch sd15-inpaint .*) \$@$", text, re.M)
    assert name and recipe
    out = base / "models" / "checkpoints" / name.group(1)
    assert main([*recipe.group(1).split(), str(out)]) == 0
    return out


def run(base: Path, capsys: pytest.CaptureFixture[str], seed: int) -> np.ndarray:
    code = main(["run", str(WORKFLOWS / "inpaint_model.json"), "--base-dir", str(base), "--json",
                 "--set", "3.steps=2", "--set", f"3.seed={seed}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])["data"]
    assert result["status"] == "success" and "11" in result["executed"]
    with Image.open(result["images"][-1]) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_inpaint_model_workflow_repaints_under_the_mask_only(tmp_path: Path, capsys) -> None:
    (tmp_path / "input").mkdir()
    source = shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", tmp_path / "input")
    make_inpaint_checkpoint(tmp_path)
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
