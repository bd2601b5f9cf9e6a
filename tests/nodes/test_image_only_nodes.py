"""Image-only checkpoints and Stable Zero123 through the graph: load, condition, sample, decode, save, reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffusion.checkpoint import CheckpointError
from diffusion.synthetic import write_checkpoint
from diffusion.zero123 import camera_embedding, load_image_only
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Ctx:
    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("image_only")
    folder = root / "models" / "checkpoints"
    write_checkpoint(folder / "zero123.safetensors", "zero123", "tiny", 2, torch.float32)
    (folder / "sd15.safetensors").symlink_to(tiny_sd15_path)
    return root


def test_a_zero123_graph_runs_and_its_saved_checkpoint_reads_back(base: Path) -> None:
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    prompt = {
        "1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "zero123.safetensors"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 32, "batch_size": 1, "color": 0x3366CC}},
        "3": {"class_type": "StableZero123_Conditioning_Batched", "inputs": {
            "clip_vision": ["1", 1], "init_image": ["2", 0], "vae": ["1", 2], "width": 64, "height": 48,
            "batch_size": 2, "elevation": 10.0, "azimuth": 0.0, "elevation_batch_increment": 0.0,
            "azimuth_batch_increment": 90.0}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["3", 2], "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
        "7": {"class_type": "ImageOnlyCheckpointSave", "inputs": {
            "model": ["1", 0], "clip_vision": ["1", 1], "vae": ["1", 2], "filename_prefix": "checkpoints/zero"}},
    }
    checked = validate_prompt(prompt, registry)
    assert checked.ok and not checked.node_errors, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs,
                                    extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result.status == "success", result.error
    saved = base / "output" / "checkpoints" / "zero_00001_.safetensors"
    with safe_open(str(saved), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["prompt"])["7"]["class_type"] == "ImageOnlyCheckpointSave"
    assert json.loads(metadata["workflow"]) == {"nodes": []}
    original = load_image_only(base / "models" / "checkpoints" / "zero123.safetensors", precision="fp32")
    again = load_image_only(saved, precision="fp32")
    for a, b in zip(original, again, strict=True):
        assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())
    assert torch.equal(original[0].context_projection.weight, again[0].context_projection.weight)


def test_the_conditioning_nodes_give_comfyui_outputs(base: Path) -> None:
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    model, vision, vae = registry["ImageOnlyCheckpointLoader"].behaviour.execute(
        None, _Ctx(), {"ckpt_name": "zero123.safetensors"})
    again = registry["ImageOnlyCheckpointLoader"].behaviour.execute(None, _Ctx(), {"ckpt_name": "zero123.safetensors"})
    assert again[0] is model and registry.services.models.loads == 1
    image = torch.rand(1, 30, 20, 3)
    inputs = {"clip_vision": vision, "init_image": image, "vae": vae, "width": 32, "height": 48, "batch_size": 3,
              "elevation": 15.0, "azimuth": -30.0}
    positive, negative, latent = registry["StableZero123_Conditioning"].behaviour.execute(None, _Ctx(), inputs)
    assert latent["samples"].shape == (3, 4, 6, 4) and not latent["samples"].any()
    cond = positive[0][0]
    assert cond.shape == (1, 1, 68) and torch.equal(cond[..., 64:], camera_embedding(15.0, -30.0))
    assert positive[0][1]["concat_latent_image"].shape == (1, 4, 6, 4)
    assert not negative[0][0].any() and not negative[0][1]["concat_latent_image"].any()
    batched = registry["StableZero123_Conditioning_Batched"].behaviour.execute(None, _Ctx(), {
        **inputs, "elevation_batch_increment": 5.0, "azimuth_batch_increment": 120.0})
    assert batched[0][0][0].shape == (3, 1, 68) and batched[2]["batch_index"] == [0, 0, 0]
    assert torch.equal(batched[0][0][0][2, :, 64:], camera_embedding(25.0, 210.0)[0])
    assert torch.equal(batched[0][0][0][0, :, :64], cond[0, :, :64])
    with pytest.raises(ValueError, match="init_image must be an IMAGE batch"):
        registry["StableZero123_Conditioning"].behaviour.execute(None, _Ctx(), {**inputs, "init_image": image[0]})


def test_a_checkpoint_without_an_image_encoder_fails_at_the_loader(base: Path) -> None:
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    with pytest.raises(CheckpointError, match=r"sd15\.safetensors: no CLIP vision model"):
        registry["ImageOnlyCheckpointLoader"].behaviour.execute(None, _Ctx(), {"ckpt_name": "sd15.safetensors"})
