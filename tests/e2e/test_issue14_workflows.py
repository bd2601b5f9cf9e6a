"""``workflows/sdxl_turbo.json`` and ``workflows/custom_sampling.json`` run end to end through ``noodlebox run``.

sdxl_turbo: SDTurboScheduler (one step) -> SamplerCustom, ComfyUI's sdxlturbo_example
graph, on the demo checkpoint at 64x64 with CLIPTextEncode (the demo model is SD1-shaped,
so the SDXL encoders and an SDXL-Turbo checkpoint are not needed). custom_sampling:
BasicScheduler -> SplitSigmas -> two SamplerCustomAdvanced with different samplers, the
second continuing the first's latent without new noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from models_kit import WORKFLOWS
from PIL import Image
from safetensors.torch import load_file

from server.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(tmp_path: Path, prompt: dict, name: str, capsys: pytest.CaptureFixture[str], *overrides: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(prompt))
    args = ["run", str(path), "--base-dir", str(tmp_path)]
    for override in overrides:
        args += ["--set", override]
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 0, err


def _picture(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.size == (64, 64)
        return np.asarray(image.convert("RGB")).astype(int)


def test_sdxl_turbo_workflow_runs_one_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = json.loads((WORKFLOWS / "sdxl_turbo.json").read_text())
    assert prompt["22"]["class_type"] == "SDTurboScheduler" and prompt["22"]["inputs"]["steps"] == 1
    assert prompt["13"]["class_type"] == "SamplerCustom"
    _run(tmp_path, prompt, "sdxl_turbo", capsys)
    assert _picture(tmp_path / "output" / "sdxl_turbo_00001_.png").std() > 1


def test_custom_sampling_workflow_splits_the_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = json.loads((WORKFLOWS / "custom_sampling.json").read_text())
    kinds = {prompt[k]["class_type"] for k in prompt}
    assert {"SamplerCustomAdvanced", "SplitSigmas", "KSamplerSelect", "DisableNoise"} <= kinds
    assert prompt["15"]["inputs"]["sampler_name"] != prompt["16"]["inputs"]["sampler_name"]
    _run(tmp_path, prompt, "custom_sampling", capsys, "13.steps=4", "14.step=2")
    assert _picture(tmp_path / "output" / "custom_sampling_00001_.png").std() > 1

    # With euler in both halves the split run is one euler run of the whole schedule (euler keeps no history);
    # KSampler with the same settings gives the same latent up to the latent scaling's round trip.
    prompt["30"] = {"class_type": "SaveLatent", "inputs": {"samples": ["18", 0], "filename_prefix": "split"}}
    prompt["31"] = {"class_type": "KSampler", "inputs": {
        "seed": 7, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    prompt["32"] = {"class_type": "SaveLatent", "inputs": {"samples": ["31", 0], "filename_prefix": "whole"}}
    _run(tmp_path, prompt, "custom_sampling_euler", capsys, "13.steps=4", "14.step=2", "15.sampler_name=euler",
         "16.sampler_name=euler")
    split = load_file(tmp_path / "output" / "split_00001_.latent")["latent_tensor"]
    whole = load_file(tmp_path / "output" / "whole_00001_.latent")["latent_tensor"]
    assert split.shape == (1, 4, 8, 8)
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-4)
