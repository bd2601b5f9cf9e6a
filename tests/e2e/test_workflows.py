"""Every example workflow under ``workflows/`` runs end to end through ``noodlebox run`` on tiny checkpoints.

Sizes and step counts are shrunk with ``--set`` (64x64 images, two or three steps) so each
run takes about a second; the graphs, nodes and files are the shipped ones. SD1.5 workflows
use the embedded default checkpoint, which ``noodlebox run`` writes into an empty
``models/checkpoints``; the SDXL one gets tiny SDXL base and refiner checkpoints under the
names the workflow asks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from models_kit import WORKFLOWS, place_checkpoint
from PIL import Image

from graph.validate import validate_prompt
from graph.workflow import to_prompt
from nodes.api import Services
from nodes.default_model import DEFAULT_CHECKPOINT, DEMO_CFG, DEMO_PROMPT, DEMO_RESOLUTION
from nodes.folders import Folders
from nodes.registry import build_registry
from server.cli import main
from server.commands.run import apply_overrides

SMALL = ["5.width=64", "5.height=64", "3.steps=2"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """``noodlebox run ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(["run", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def sets(overrides: list[str]) -> list[str]:
    """``--set`` arguments for each override."""
    return [arg for item in overrides for arg in ("--set", item)]


def pixels(path: str | Path) -> np.ndarray:
    """An image file's RGB pixels."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def result_line(out: str) -> dict[str, Any]:
    """The ``result`` event that ends ``--json`` output."""
    last = json.loads(out.strip().splitlines()[-1])
    assert last["type"] == "result"
    return last["data"]


def test_txt2img_on_a_fresh_base_dir_writes_the_executed_prompt(tmp_path: Path, capsys) -> None:
    """The must-show: a fresh folder, the shipped API workflow, a PNG whose ``prompt`` is the executed prompt."""
    code, out, err = run_cli(capsys, WORKFLOWS / "txt2img.json", "--base-dir", tmp_path, *sets(SMALL))
    assert code == 0, err
    assert (tmp_path / "models" / "checkpoints" / DEFAULT_CHECKPOINT).is_file()  # the embedded default
    written = out.split()
    assert written == [str(tmp_path / "output" / "ComfyUI_00001_.png")]
    with Image.open(written[0]) as png:
        assert png.size == (64, 64)
        chunks = dict(png.text)
    assert "workflow" not in chunks  # an API file has no editor workflow to carry

    registry = build_registry(Services(folders=Folders(tmp_path)))
    sent = apply_overrides(json.loads((WORKFLOWS / "txt2img.json").read_text()), SMALL, registry)
    executed = validate_prompt(sent, registry).prompt
    assert json.loads(chunks["prompt"]) == executed
    cfg = json.loads(chunks["prompt"])["3"]["inputs"]["cfg"]
    assert isinstance(cfg, float) and cfg == DEMO_CFG  # coerced: the file says 5


def test_ui_workflow_gives_the_same_pixels_and_carries_the_workflow(tmp_path: Path, capsys) -> None:
    code, out_api, err = run_cli(capsys, WORKFLOWS / "txt2img.json", "--base-dir", tmp_path, *sets(SMALL))
    assert code == 0, err
    code, out_ui, err = run_cli(capsys, WORKFLOWS / "txt2img.ui.json", "--base-dir", tmp_path, *sets(SMALL))
    assert code == 0, err
    api_png, ui_png = out_api.strip(), out_ui.strip()
    assert ui_png.endswith("ComfyUI_00002_.png")
    assert np.array_equal(pixels(api_png), pixels(ui_png))
    assert pixels(api_png).std() > 0  # a real picture, not a constant
    with Image.open(ui_png) as png, Image.open(api_png) as api:
        assert json.loads(png.text["workflow"]) == json.loads((WORKFLOWS / "txt2img.ui.json").read_text())
        assert json.loads(png.text["prompt"]) == json.loads(api.text["prompt"])


def test_api_file_is_the_ui_file_converted(tmp_path: Path) -> None:
    """txt2img.json is exactly what the editor would queue for txt2img.ui.json: ComfyUI's default graph,
    with the default checkpoint and the demo model's size, prompt and cfg."""
    registry = build_registry(Services(folders=Folders(tmp_path)))
    ui = json.loads((WORKFLOWS / "txt2img.ui.json").read_text())
    api = json.loads((WORKFLOWS / "txt2img.json").read_text())
    assert to_prompt(ui, registry) == api
    sampler = api["3"]["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == (
        156680208700286, 20, DEMO_CFG, "euler", "normal")
    assert api["5"]["inputs"] == {"width": DEMO_RESOLUTION, "height": DEMO_RESOLUTION, "batch_size": 1}
    assert api["6"]["inputs"]["text"] == DEMO_PROMPT


@pytest.mark.parametrize("name", ["txt2img.json", "img2img.json", "inpaint.json", "hires_fix.json"])
def test_sd15_workflows_use_the_default_checkpoint(name: str) -> None:
    prompt = json.loads((WORKFLOWS / name).read_text())
    names = [n["inputs"]["ckpt_name"] for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple"]
    assert names == [DEFAULT_CHECKPOINT]


def write_input_image(folder: Path, alpha_hole: bool) -> None:
    """A 64x64 stand-in for workflows/input/noodlebox_example.png (with or without its transparent hole)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    if alpha_hole:
        alpha = np.full((64, 64, 1), 255, np.uint8)
        alpha[16:40, 24:48] = 0
        Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(folder / "noodlebox_example.png")
    else:
        Image.fromarray(rgb, "RGB").save(folder / "noodlebox_example.png")


def test_shipped_input_image_has_a_hole_to_inpaint() -> None:
    with Image.open(WORKFLOWS / "input" / "noodlebox_example.png") as image:
        assert image.mode == "RGBA" and image.size == (512, 512)
        alpha = np.asarray(image.getchannel("A"))
    assert (alpha == 0).mean() > 0.02 and (alpha == 255).mean() > 0.8


def test_img2img(tmp_path: Path, capsys) -> None:
    write_input_image(tmp_path / "input", alpha_hole=False)
    code, out, err = run_cli(capsys, WORKFLOWS / "img2img.json", "--base-dir", tmp_path, "--json",
                             *sets(["3.steps=3"]))
    assert code == 0, err
    result = result_line(out)
    assert result["status"] == "success"
    assert sorted(result["executed"], key=int) == ["3", "4", "6", "7", "8", "9", "10", "11"]
    (image,) = result["images"]
    assert Path(image).name == "img2img_00001_.png"
    assert pixels(image).shape == (64, 64, 3)


def test_inpaint_repaints_only_under_the_mask(tmp_path: Path, capsys) -> None:
    """With no transparent pixel the mask is empty and the sampler keeps the encoded latent:
    the result is the image's plain VAE round trip (up to rounding). With a hole, it is not."""
    roundtrip = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "noodlebox_example.png"}},
        "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "roundtrip", "images": ["8", 0]}},
    }
    (tmp_path / "roundtrip.json").write_text(json.dumps(roundtrip))
    opaque, holed = tmp_path / "opaque", tmp_path / "holed"
    write_input_image(opaque / "input", alpha_hole=False)
    write_input_image(holed / "input", alpha_hole=True)
    runs = {}
    for base, workflow in ((opaque, "inpaint.json"), (opaque, tmp_path / "roundtrip.json"),
                           (holed, "inpaint.json"), (holed, tmp_path / "roundtrip.json")):
        path = workflow if isinstance(workflow, Path) else WORKFLOWS / workflow
        code, out, err = run_cli(capsys, path, "--base-dir", base, *sets(["3.steps=2"] if path.name == "inpaint.json"
                                                                         else []))
        assert code == 0, err
        runs[(base.name, path.name)] = pixels(out.strip())
    kept = np.abs(runs[("opaque", "inpaint.json")].astype(int) - runs[("opaque", "roundtrip.json")])
    repainted = np.abs(runs[("holed", "inpaint.json")].astype(int) - runs[("holed", "roundtrip.json")])
    # float rounding through the sampler, amplified by a random-weight decoder: a few levels at most
    assert kept.max() <= 8 and kept.mean() < 1
    assert repainted.mean() > 10 * max(kept.mean(), 0.1)


def test_hires_fix_upscales_then_samples_again(tmp_path: Path, capsys) -> None:
    overrides = ["5.width=64", "5.height=64", "3.steps=2", "10.width=96", "10.height=96", "11.steps=2"]
    code, out, err = run_cli(capsys, WORKFLOWS / "hires_fix.json", "--base-dir", tmp_path, "--json", *sets(overrides))
    assert code == 0, err
    result = result_line(out)
    assert {"3", "10", "11"} <= set(result["executed"])
    steps = [json.loads(line)["data"] for line in out.splitlines() if json.loads(line)["type"] == "progress"]
    assert [(s["node"], s["value"]) for s in steps] == [("3", 1), ("3", 2), ("11", 1), ("11", 2)]
    assert pixels(result["images"][0]).shape == (96, 96, 3)


def test_sdxl_base_then_refiner(tmp_path: Path, capsys) -> None:
    checkpoints = tmp_path / "models" / "checkpoints"
    place_checkpoint(checkpoints, "sd_xl_base_1.0.safetensors", "sdxl")
    place_checkpoint(checkpoints, "sd_xl_refiner_1.0.safetensors", "sdxl-refiner")
    overrides = ["5.width=64", "5.height=64", "10.steps=3", "10.end_at_step=2", "11.steps=3", "11.start_at_step=2"]
    code, out, err = run_cli(capsys, WORKFLOWS / "sdxl_base_refiner.json", "--base-dir", tmp_path, "--json",
                             *sets(overrides))
    assert code == 0, err
    assert not (checkpoints / DEFAULT_CHECKPOINT).exists()  # not asked for, not written
    result = result_line(out)
    steps = [json.loads(line)["data"] for line in out.splitlines() if json.loads(line)["type"] == "progress"]
    # the base runs steps 0-2 of 3, the refiner the last one
    assert [(s["node"], s["value"], s["max"]) for s in steps] == [("10", 1, 2), ("10", 2, 2), ("11", 1, 1)]
    assert {"4", "12", "6", "7", "15", "16", "17", "19"} <= set(result["executed"])
    assert pixels(result["images"][0]).shape == (64, 64, 3)


def test_every_shipped_workflow_is_run_here() -> None:
    """A new file under workflows/ needs a test in this module."""
    covered = {"txt2img.json", "txt2img.ui.json", "img2img.json", "inpaint.json", "hires_fix.json",
               "sdxl_base_refiner.json",
               "outpaint.json",  # run by test_outpaint_workflow.py
               "inpaint_vae.json", "upscale_esrgan.json",  # run by test_issue15_workflows.py
               "controlnet.json",  # run by test_controlnet_workflow.py
               "lora.json",  # run by test_lora_workflow.py
               "inpaint_model.json",  # run by test_inpaint_model_workflow.py
               "unclip.json",  # run by test_unclip_workflow.py
               "sdxl_turbo.json", "custom_sampling.json",  # run by test_issue14_workflows.py
               "sd35.json", "flux_schnell.json"}  # run by test_sd3_flux_workflows.py
    assert {p.name for p in WORKFLOWS.glob("*.json")} == covered
