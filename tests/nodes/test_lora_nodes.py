"""LoraLoader and LoraLoaderModelOnly through the real validator and executor.

A strength change re-runs only the LoRA node and what follows it, and re-parses nothing
(the parsed file is in the model cache); both strengths at 0 sample exactly what the bare
checkpoint samples, so stacked patches come off cleanly.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.lora.synthetic import write_lora
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("lora_nodes")
    (root / "models" / "checkpoints").mkdir(parents=True)
    ckpt = Path(shutil.copy(tiny_sd15_path, root / "models" / "checkpoints" / "tiny.safetensors"))
    loras = root / "models" / "loras"
    write_lora(loras / "style.safetensors", base=ckpt, rank=4, seed=1, kind="lora")
    write_lora(loras / "detail.safetensors", base=ckpt, rank=4, seed=2, kind="locon")
    (loras / "not-a-lora.safetensors").symlink_to(ckpt)
    return root


@pytest.fixture
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


def _prompt(style: float = 1.0, clip: float = 1.0, detail: float = 0.8, lora: str = "style.safetensors") -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora,
                                                     "strength_model": style, "strength_clip": clip}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0], "lora_name": "detail.safetensors",
                                                              "strength_model": detail}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "a red square"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": ""}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "seed": 3, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    }


def _run(registry: NodeRegistry, executor: Executor, prompt: dict) -> tuple[Any, list[str]]:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = executor.run(checked.prompt, "p", checked.outputs)
    assert result.status == "success", result.error
    return result, list(result.executed)


def test_strength_change_reruns_only_the_lora_node_and_what_follows(registry: NodeRegistry) -> None:
    executor = Executor(registry)
    _, first = _run(registry, executor, _prompt())
    assert set(first) == {"1", "2", "3", "4", "5", "6", "7", "8"}
    loads = registry.services.models.loads
    assert loads == 3  # checkpoint and the two parsed LoRA files
    _, again = _run(registry, executor, _prompt(detail=0.3))
    assert set(again) == {"3", "7", "8"}
    _, clip_only = _run(registry, executor, _prompt(clip=0.5, detail=0.3))
    assert set(clip_only) == {"2", "3", "4", "5", "7", "8"}
    assert registry.services.models.loads == loads  # no file read or parsed again


def _caller(registry: NodeRegistry) -> Any:
    """Call a node of ``registry`` directly, outside a prompt."""
    ctx = _Ctx()

    def call(name: str, **inputs: Any) -> Any:
        return registry[name].behaviour.execute(None, ctx, inputs)

    return call


class _Ctx:
    """A bare executor context for calling a node directly."""

    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


def test_outputs_are_clones_with_patches_and_zero_strength_samples_the_bare_model(registry: NodeRegistry) -> None:
    call = _caller(registry)
    model, clip, _vae = call("CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
    m2, c2 = call("LoraLoader", model=model, clip=clip, lora_name="style.safetensors", strength_model=1.0,
                  strength_clip=1.0)
    (m3,) = call("LoraLoaderModelOnly", model=m2, lora_name="detail.safetensors", strength_model=0.5)
    assert model.weight_patches == {} and clip.weight_patches == {}  # inputs untouched
    assert m2.model is model.model and len(m2.weight_patches) == 48 and len(c2.weight_patches) == 12
    assert len(m3.weight_patches) == 79 and c2.clip_l is clip.clip_l
    same = call("LoraLoader", model=model, clip=clip, lora_name="style.safetensors", strength_model=0.0,
                strength_clip=0.0)
    assert same[0] is model and same[1] is clip

    def sample(m: Any, c: Any) -> torch.Tensor:
        (pos,) = call("CLIPTextEncode", clip=c, text="a red square")
        (neg,) = call("CLIPTextEncode", clip=c, text="")
        (latent,) = call("EmptyLatentImage", width=16, height=16, batch_size=1)
        (out,) = call("KSampler", model=m, seed=3, steps=2, cfg=3.0, sampler_name="euler", scheduler="normal",
                      positive=pos, negative=neg, latent_image=latent, denoise=1.0)
        return out["samples"]

    bare = sample(model, clip)
    patched = sample(m3, c2)
    assert not torch.equal(bare, patched)
    assert torch.equal(sample(model, clip), bare)  # the patches come off bit for bit


def test_bad_files_fail_at_the_lora_node_with_one_line(registry: NodeRegistry) -> None:
    executor = Executor(registry)
    checked = validate_prompt(_prompt(lora="not-a-lora.safetensors"), registry)
    assert checked.ok, checked.node_errors
    result = executor.run(checked.prompt, "p", checked.outputs)
    assert result.status == "error"
    assert result.error["node_id"] == "2" and result.error["node_type"] == "LoraLoader"
    message = result.error["exception_message"]
    assert message.startswith("not-a-lora.safetensors: not a LoRA file") and "\n" not in message
