"""``workflows/inpaint_vae.json`` and ``workflows/upscale_esrgan.json`` run through ``noodlebox run`` on the demo model.

inpaint_vae: LoadImage (its alpha is the mask) -> ImageScale (64x64) -> VAEEncodeForInpaint
-> KSampler -> VAEDecode -> SaveImage. The latents are saved beside the image: the sampler
repaints the cells under the (grown) mask and keeps the others.

upscale_esrgan: txt2img at 64x64, then UpscaleModelLoader + ImageUpscaleWithModel with the
4x ESRGAN file the Makefile's ``models`` target writes (its recipe is read from the Makefile
and run here into the test's folder).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from models_kit import REPO, WORKFLOWS
from PIL import Image
from safetensors.torch import load_file

from nodes.default_model import DEFAULT_CHECKPOINT
from server.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_input(base: Path) -> None:
    (base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", base / "input")


def _run(base: Path, prompt: dict, capsys: pytest.CaptureFixture[str], *sets: str) -> None:
    path = base / "prompt.json"
    path.write_text(json.dumps(prompt))
    args = ["run", str(path), "--base-dir", str(base)]
    for item in sets:
        args += ["--set", item]
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 0, err


def test_inpaint_vae_repaints_the_transparent_hole_only(tmp_path: Path, capsys) -> None:
    prompt = json.loads((WORKFLOWS / "inpaint_vae.json").read_text())
    assert prompt["4"]["inputs"]["ckpt_name"] == DEFAULT_CHECKPOINT
    assert prompt["12"]["class_type"] == "VAEEncodeForInpaint" and prompt["12"]["inputs"]["mask"] == ["10", 1]
    _with_input(tmp_path)
    prompt["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "encoded"}}
    prompt["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "sampled"}}
    _run(tmp_path, prompt, capsys, "3.steps=3")
    with Image.open(tmp_path / "output" / "inpaint_vae_00001_.png") as image:
        assert image.size == (64, 64)
        assert np.asarray(image.convert("RGB")).std() > 1
    encoded = load_file(tmp_path / "output" / "encoded_00001_.latent")["latent_tensor"]
    sampled = load_file(tmp_path / "output" / "sampled_00001_.latent")["latent_tensor"]
    assert encoded.shape == sampled.shape == (1, 4, 8, 8)
    # The example's transparent hole covers latent rows 1-3, columns 4-6 (the alpha is the mask).
    assert torch.allclose(sampled[..., 5:, :], encoded[..., 5:, :], rtol=0, atol=1e-5)
    assert torch.allclose(sampled[..., :3], encoded[..., :3], rtol=0, atol=1e-5)
    assert (sampled[..., 2, 5] - encoded[..., 2, 5]).abs().mean() > 0.5


def _make_upscaler(models: Path) -> Path:
    """Run the Makefile's recipe for the upscale model into ``models``."""
    lines = (REPO / "Makefile").read_text().splitlines()
    for rule, recipe in itertools.pairwise(lines):
        if re.match(r"^\$\(UPSCALE_DIR\)/noodlebox-test-esrgan\.pth:", rule):
            out = models / "upscale_models" / "noodlebox-test-esrgan.pth"
            args = [str(out) if a == "$@" else a for a in recipe.split()[1:]]  # after $(BIN)/noodlebox
            assert main(args) == 0
            return out
    raise AssertionError("the Makefile has no rule for models/upscale_models/noodlebox-test-esrgan.pth")


def test_upscale_esrgan_workflow_gives_a_4x_image(tmp_path: Path, capsys) -> None:
    prompt = json.loads((WORKFLOWS / "upscale_esrgan.json").read_text())
    model = _make_upscaler(tmp_path / "models")
    capsys.readouterr()
    assert prompt["14"]["inputs"]["model_name"] == model.name
    prompt["16"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "before"}}
    _run(tmp_path, prompt, capsys, "3.steps=2")
    with Image.open(tmp_path / "output" / "upscale_esrgan_00001_.png") as image:
        assert image.size == (256, 256)
        upscaled = np.asarray(image.convert("RGB")).astype(float)
    assert upscaled.std() > 1
    # The upscaler model type and its file list reach the editor.
    from nodes.api import Services
    from nodes.folders import Folders
    from nodes.object_info import node_info
    from nodes.registry import build_registry

    info = node_info(build_registry(Services(folders=Folders(tmp_path)))["UpscaleModelLoader"])
    assert info["input"]["required"]["model_name"][1]["options"] == [model.name]
