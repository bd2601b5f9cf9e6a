"""workflows/controlnet.json (a ControlNet and a T2I-Adapter on one conditioning) runs on the Makefile's files."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from models_kit import REPO, WORKFLOWS, run_workflow

from server.cli import main

#: The Makefile's ``models`` target writes the control files with these commands (kept in step here).
MAKEFILE = REPO / "Makefile"
DEMO_BASE = REPO / "models" / "demo" / "noodlebox-demo-shapes.safetensors"


def make_control_files(models: Path) -> list[str]:
    """Run the Makefile's recipes for the demo control files (``$(CONTROL_DIR)/NAME:`` rules) into ``models``."""
    lines = MAKEFILE.read_text().splitlines()
    made = []
    for rule, recipe in itertools.pairwise(lines):
        target = re.match(r"^\$\(CONTROL_DIR\)/(\S+):", rule)
        if target is None:
            continue
        out = models / "controlnet" / target.group(1)
        args = recipe.split()[1:]  # after $(BIN)/noodlebox
        args = [str(out) if a == "$@" else a.replace("$(CONTROL_BASE)", str(DEMO_BASE)) for a in args]
        assert main(args) == 0
        made.append(out.name)
    return made


def run(base: Path, capsys: pytest.CaptureFixture[str], *overrides: str) -> np.ndarray:
    """workflows/controlnet.json at 2 steps with ``overrides``: its image; both control nodes must have run."""
    pixels, executed = run_workflow(base, capsys, "controlnet.json", "3.steps=2", *overrides)
    assert {"12", "13", "14", "15"} <= set(executed)
    return pixels


def test_controlnet_workflow_runs_and_both_controls_steer_it(tmp_path: Path, capsys) -> None:
    (tmp_path / "input").mkdir()
    shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", tmp_path / "input")
    assert sorted(make_control_files(tmp_path / "models")) == ["noodlebox-demo-controlnet.safetensors",
                                                               "noodlebox-demo-t2i-adapter.safetensors"]
    steered = run(tmp_path, capsys)
    assert steered.shape == (64, 64, 3)
    plain = run(tmp_path, capsys, "14.strength=0", "15.strength=0")
    only_controlnet = run(tmp_path, capsys, "15.strength=0")
    assert np.abs(steered - plain).mean() > 0.5
    assert np.abs(steered - only_controlnet).mean() > 0.1  # the T2I-Adapter adds its own part
