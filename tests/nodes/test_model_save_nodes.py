"""Saving models: the original layout the loader reads, patches applied, ComfyUI's names and metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffusion.checkpoint import load_checkpoint, load_vae
from diffusion.ksampler import ksample
from diffusion.save import save_checkpoint
from diffusion.synthetic import write_checkpoint
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_an_unpatched_checkpoint_saves_back_to_the_same_tensors(arch: str, tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "in.safetensors", arch, "tiny", 3, torch.float32)
    loaded = load_checkpoint(source, precision="fp32", device=CPU)
    out = save_checkpoint(tmp_path / "out.safetensors", loaded.unet, loaded.clip, loaded.vae, {})
    before, after = _tensors(source), _tensors(out)
    assert sorted(after) == sorted(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def _sample(unet, clip) -> torch.Tensor:
    cond, pooled = clip.encode("a red circle")
    positive = [[cond, {"pooled_output": pooled}]]
    negative = [[clip.encode("")[0], {"pooled_output": pooled}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return ksample(unet, 1, 3, 5.0, "euler", "normal", positive, negative, latent)["samples"]


def test_a_saved_merge_gives_the_image_of_the_graph_that_made_it(tiny_sd15_path: Path, tmp_path: Path) -> None:
    from nodes.merge import CLIPMergeSimple, ModelMergeSimple

    other = write_checkpoint(tmp_path / "b.safetensors", "sd15", "tiny", 9, torch.float32)
    a = load_checkpoint(tiny_sd15_path, precision="fp32", device=CPU)
    b = load_checkpoint(other, precision="fp32", device=CPU)
    unet, clip = ModelMergeSimple(a.unet, b.unet, 0.4), CLIPMergeSimple(a.clip, b.clip, 0.6)
    expected = _sample(unet, clip)
    saved = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", unet, clip, a.vae, {}),
                            precision="fp32", device=CPU)
    assert torch.equal(_sample(saved.unet, saved.clip), expected)
    assert not torch.equal(_sample(a.unet, a.clip), expected)


def test_save_nodes_name_files_as_comfyui_and_store_the_prompt(tiny_sd15_path: Path, tmp_path: Path) -> None:
    folders = Folders(tmp_path)
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "a.safetensors").symlink_to(tiny_sd15_path)
    registry = build_registry(Services(folders=folders))
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "CheckpointSave", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                         "filename_prefix": "checkpoints/ComfyUI"}},
        "3": {"class_type": "VAESave", "inputs": {"vae": ["1", 2], "filename_prefix": "vae/ComfyUI_vae"}},
        "4": {"class_type": "CLIPSave", "inputs": {"clip": ["1", 1], "filename_prefix": "clip/ComfyUI"}},
        "5": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "diffusion_models/ComfyUI"}},
    }
    checked = validate_prompt(prompt, registry)
    assert checked.ok and not checked.node_errors, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs, extra_data={
        "extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result.status == "success", result.error
    out = tmp_path / "output"
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["checkpoints/ComfyUI_00001_.safetensors", "clip/ComfyUI_clip_l_00001_.safetensors",
                     "diffusion_models/ComfyUI_00001_.safetensors", "vae/ComfyUI_vae_00001_.safetensors"]
    with safe_open(str(out / names[0]), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["prompt"])["2"]["class_type"] == "CheckpointSave"
    assert json.loads(metadata["workflow"]) == {"nodes": []}
    vae = load_vae(out / names[3], precision="fp32", device=CPU)
    assert vae.model.decoder is not None
    assert all(k.startswith("model.diffusion_model.") for k in _tensors(out / names[2]))


def test_lora_extraction_recovers_a_low_rank_difference(tiny_sd15_path: Path) -> None:
    from diffusion.lora_extract import extract_unet_lora
    from diffusion.patching import DiffAdapter
    from nodes.merge import ModelMergeSubtract

    base = load_checkpoint(tiny_sd15_path, precision="fp32", device=CPU).unet
    key = next(k for k, v in base.model.named_parameters() if k.endswith("attn1.to_q.weight"))
    weight = dict(base.model.named_parameters())[key]
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(weight.shape[0], 2, generator=gen) @ torch.randn(2, weight.shape[1], generator=gen)
    tuned = base.with_patches({key: DiffAdapter(delta)})
    lora = extract_unet_lora(ModelMergeSubtract(tuned, base, 1.0), rank=2)
    from diffusion.convert import unet_ldm_names

    stem = "lora_unet_" + unet_ldm_names([key], base.model.config)[key].removesuffix(".weight").replace(".", "_")
    torch.testing.assert_close(lora[f"{stem}.lora_up.weight"] @ lora[f"{stem}.lora_down.weight"], delta,
                               rtol=1e-4, atol=1e-4)
    assert float(lora[f"{stem}.alpha"]) == 2.0
    others = [k for k in lora if k.endswith(".lora_up.weight") and not k.startswith(stem)]
    assert others and all(lora[k].abs().max() < 1e-5 for k in others)  # no difference elsewhere
    assert any(k.endswith(".diff_b") for k in lora)
