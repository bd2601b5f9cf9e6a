"""``workflows/outpaint.json`` runs end to end through ``noodlebox run`` on the shipped example image.

LoadImage -> ImageScale (48x48) -> ImagePadForOutpaint (16 px left and bottom) ->
VAEEncodeForInpaint -> KSampler -> VAEDecode -> SaveImage on the default demo
checkpoint, at 64x64. The run also saves the encoded and the sampled latents: the
sampler must repaint the cells under the padding and keep the cells the mask leaves
alone, up to the float rounding of the latent scaling. Pixels cannot show the second
part: the VAE decoder's attention mixes the whole picture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from models_kit import WORKFLOWS
from PIL import Image
from safetensors.torch import load_file

from nodes.default_model import DEFAULT_CHECKPOINT
from server.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_outpaint_repaints_the_padding_and_keeps_the_image(tmp_path: Path, capsys) -> None:
    prompt = json.loads((WORKFLOWS / "outpaint.json").read_text())
    assert prompt["4"]["inputs"]["ckpt_name"] == DEFAULT_CHECKPOINT
    assert [prompt[k]["class_type"] for k in ("10", "13", "11", "12", "3", "8", "9")] == [
        "LoadImage", "ImageScale", "ImagePadForOutpaint", "VAEEncodeForInpaint", "KSampler", "VAEDecode", "SaveImage"]
    (tmp_path / "input").mkdir()
    shutil.copy(WORKFLOWS / "input" / "noodlebox_example.png", tmp_path / "input")
    prompt["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "encoded"}}
    prompt["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "sampled"}}
    (tmp_path / "outpaint_and_latents.json").write_text(json.dumps(prompt))

    code = main(["run", str(tmp_path / "outpaint_and_latents.json"), "--base-dir", str(tmp_path),
                 "--set", "3.steps=2"])
    _, err = capsys.readouterr()
    assert code == 0, err
    with Image.open(tmp_path / "output" / "outpaint_00001_.png") as image:
        assert image.size == (64, 64)
        picture = np.asarray(image.convert("RGB")).astype(int)
    assert picture.std() > 1  # not a flat grey

    encoded = load_file(tmp_path / "output" / "encoded_00001_.latent")["latent_tensor"]
    sampled = load_file(tmp_path / "output" / "sampled_00001_.latent")["latent_tensor"]
    assert encoded.shape == sampled.shape == (1, 4, 8, 8)
    # Top right: original image, away from the padded (left, bottom) sides, the 8 px feather and the 8 px growth.
    assert torch.allclose(sampled[..., :4, 4:], encoded[..., :4, 4:], rtol=0, atol=1e-5)
    # Under the padding: greyed out by VAEEncodeForInpaint, painted from noise by the sampler.
    assert (sampled[..., 6:, :2] - encoded[..., 6:, :2]).abs().mean() > 1.0
