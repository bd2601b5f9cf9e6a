"""workflows/sd35.json and workflows/flux_schnell.json run end to end on tiny synthetic checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.families import synthetic as fs
from server.cli import main

REPO = Path(__file__).resolve().parents[2]
CASES = [("sd35.json", "sd35", ["3.steps=2"]), ("flux_schnell.json", "flux-schnell", ["3.steps=2"])]


@pytest.mark.parametrize(("workflow", "arch", "overrides"), CASES)
def test_workflow_runs_on_the_tiny_checkpoint(workflow: str, arch: str, overrides: list[str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    graph = json.loads((REPO / "workflows" / workflow).read_text())
    name = graph["4"]["inputs"]["ckpt_name"]
    fs.write_checkpoint(tmp_path / "models" / "checkpoints" / name, arch)
    sets = [a for item in ["5.width=64", "5.height=48", *overrides] for a in ("--set", item)]
    code = main(["run", str(REPO / "workflows" / workflow), "--base-dir", str(tmp_path), *sets])
    _out, err = capsys.readouterr()
    assert code == 0, err
    (png,) = sorted((tmp_path / "output").glob("*.png"))
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (48, 64, 3) and pixels.std() > 0


def test_the_makefile_makes_the_checkpoints_the_workflows_name() -> None:
    makefile = (REPO / "Makefile").read_text()
    for workflow, arch, _ in CASES:
        name = json.loads((REPO / "workflows" / workflow).read_text())["4"]["inputs"]["ckpt_name"]
        assert name == f"noodlebox-tiny-{arch}.safetensors"
        assert re.search(rf"models/checkpoints/{re.escape(name)}", makefile)
    assert "models/checkpoints/noodlebox-tiny-%.safetensors" in makefile
