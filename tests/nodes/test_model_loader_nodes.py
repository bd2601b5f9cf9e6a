"""Loaders for models in parts: each reads back exactly the weights the single-file checkpoint holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from diffusion.checkpoint import load_checkpoint
from diffusion.synthetic import write_checkpoint
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("model_loaders") / "models"
    for sub in ("checkpoints", "diffusion_models", "text_encoders", "diffusers"):
        (root / sub).mkdir(parents=True)
    shutil.copy(tiny_sd15_path, root / "checkpoints" / "tiny.safetensors")
    from diffusion.checkpoint import TensorFile

    with TensorFile(tiny_sd15_path) as file:
        unet = {k.removeprefix("model.diffusion_model."): file.get(k) for k in file.shapes
                if k.startswith("model.diffusion_model.")}
    save_file(unet, str(root / "diffusion_models" / "tiny-unet.safetensors"))
    sd15 = load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))
    save_file(_state(sd15.clip.clip_l, "text_model."), str(root / "text_encoders" / "tiny-clip-l.safetensors"))
    xl_path = write_checkpoint(root.parent / "xl.safetensors", "sdxl", "tiny", 2, torch.float32)
    xl = load_checkpoint(xl_path, precision="fp32", device=torch.device("cpu"), parts=("clip",))
    save_file(_state(xl.clip.clip_l, "text_model."), str(root / "text_encoders" / "xl-clip-l.safetensors"))
    save_file(_state(xl.clip.clip_g), str(root / "text_encoders" / "xl-clip-g.safetensors"))
    folder = root / "diffusers" / "tiny-diffusers"
    sd15.unet.model.save_pretrained(folder / "unet")
    sd15.clip.clip_l.save_pretrained(folder / "text_encoder")
    sd15.vae.model.save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (root.parent / "xl-ckpt").write_text(str(xl_path))
    return root.parent


@pytest.fixture
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


class _Ctx:
    """A bare executor context for calling a node directly."""

    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


def _call(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    return registry[name].behaviour.execute(None, _Ctx(), inputs)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _encode(registry: NodeRegistry, clip: Any) -> torch.Tensor:
    (cond,) = _call(registry, "CLIPTextEncode", clip=clip, text="a red square")
    return cond[0][0]


def test_unet_and_clip_files_give_the_checkpoints_weights(registry: NodeRegistry) -> None:
    model, clip, _vae = _call(registry, "CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
    (unet,) = _call(registry, "UNETLoader", unet_name="tiny-unet.safetensors", weight_dtype="default")
    assert unet.arch == "sd1" and unet.prediction == "eps" and _same(unet.model, model.model)
    (alone,) = _call(registry, "CLIPLoader", clip_name="tiny-clip-l.safetensors", type="stable_diffusion")
    assert alone.kind == "sd1" and torch.equal(_encode(registry, alone), _encode(registry, clip))
    with pytest.raises(ValueError, match="CLIP type 'stable_cascade' is not supported yet"):
        _call(registry, "CLIPLoader", clip_name="tiny-clip-l.safetensors", type="stable_cascade")


def test_dual_clip_sdxl_encodes_as_the_checkpoint(registry: NodeRegistry, base: Path) -> None:
    xl = load_checkpoint(Path((base / "xl-ckpt").read_text()), precision="fp32", device=torch.device("cpu"),
                         parts=("clip",))
    (dual,) = _call(registry, "DualCLIPLoader", clip_name1="xl-clip-g.safetensors",
                    clip_name2="xl-clip-l.safetensors", type="sdxl")
    assert dual.kind == "sdxl"
    (ours,) = _call(registry, "CLIPTextEncode", clip=dual, text="a red square")
    (theirs,) = _call(registry, "CLIPTextEncode", clip=xl.clip, text="a red square")
    assert torch.equal(ours[0][0], theirs[0][0]) and torch.equal(ours[0][1]["pooled_output"],
                                                                 theirs[0][1]["pooled_output"])
    with pytest.raises(Exception, match=r"tiny-clip-l\.safetensors: a second clip_l text encoder"):
        _call(registry, "DualCLIPLoader", clip_name1="xl-clip-l.safetensors",
              clip_name2="tiny-clip-l.safetensors", type="sdxl")


def test_checkpoint_loader_config_and_diffusers_folder(registry: NodeRegistry) -> None:
    model, _clip, _vae = _call(registry, "CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
    v_model, _, _ = _call(registry, "CheckpointLoader", config_name="v2-inference-v.yaml", ckpt_name="tiny.safetensors")
    eps_model, _, _ = _call(registry, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="tiny.safetensors")
    assert v_model.prediction == "v" and eps_model.prediction == "eps" and _same(v_model.model, model.model)
    unet, clip, vae = _call(registry, "DiffusersLoader", model_path="tiny-diffusers")
    _m, ckpt_clip, ckpt_vae = _call(registry, "CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
    assert unet.arch == "sd1" and _same(unet.model, model.model) and _same(vae.model, ckpt_vae.model)
    assert torch.equal(_encode(registry, clip), _encode(registry, ckpt_clip))


def test_loaders_cache_and_fail_in_one_line(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny-unet.safetensors",
                                                          "weight_dtype": "default"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    executor = Executor(registry, cache="none")
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    for _ in range(2):
        assert executor.run(checked.prompt, "p", checked.outputs).status == "success"
    assert registry.services.models.loads == 1
    bad = {"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "tiny-clip-l.safetensors", "type": "wan"}},
           "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    checked = validate_prompt(bad, registry)
    result = executor.run(checked.prompt, "p", checked.outputs)
    assert result.status == "error" and "\n" not in result.error["exception_message"]
