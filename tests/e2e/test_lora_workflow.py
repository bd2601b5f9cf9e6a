"""workflows/lora.json (a LoRA on MODEL and CLIP, then a model-only LoCon) runs on the Makefile's LoRA files."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from models_kit import REPO, run_workflow

from server.cli import main

MAKEFILE = REPO / "Makefile"
DEMO_BASE = REPO / "models" / "demo" / "noodlebox-demo-shapes.safetensors"


def make_lora_files(models: Path) -> list[str]:
    """Run the Makefile's recipes for the demo LoRAs (``$(LORA_DIR)/NAME:`` rules) into ``models``."""
    made = []
    for rule, recipe in itertools.pairwise(MAKEFILE.read_text().splitlines()):
        target = re.match(r"^\$\(LORA_DIR\)/(\S+):", rule)
        if target is None:
            continue
        out = models / "loras" / target.group(1)
        args = [str(out) if a == "$@" else a.replace("$(LORA_BASE)", str(DEMO_BASE)) for a in recipe.split()[1:]]
        assert main(args) == 0
        made.append(out.name)
    return made


def run(base: Path, capsys: pytest.CaptureFixture[str], workflow: str, *overrides: str) -> tuple[np.ndarray, list]:
    return run_workflow(base, capsys, workflow, "3.steps=2", *overrides)


def test_lora_workflow_runs_both_loras_steer_it_and_zero_strength_is_the_plain_image(tmp_path: Path, capsys) -> None:
    assert sorted(make_lora_files(tmp_path / "models")) == ["noodlebox-test-locon.safetensors",
                                                            "noodlebox-test-lora.safetensors"]
    capsys.readouterr()
    steered, executed = run(tmp_path, capsys, "lora.json")
    assert steered.shape == (64, 64, 3) and {"10", "11", "3"} <= set(executed)
    plain, _ = run(tmp_path, capsys, "txt2img.json", "3.steps=2", "9.filename_prefix=lora")
    off, _ = run(tmp_path, capsys, "lora.json", "10.strength_model=0", "10.strength_clip=0", "11.strength_model=0")
    only_first, _ = run(tmp_path, capsys, "lora.json", "11.strength_model=0")
    assert np.array_equal(off, plain)  # no strength: exactly the checkpoint's image
    assert np.abs(steered - plain).mean() > 0.5
    assert np.abs(steered - only_first).mean() > 0.1  # the model-only LoCon adds its own part
