"""ControlNet nodes: loaders (cached like checkpoints), Apply and Apply Advanced (chaining), errors at the node."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.control.models import Control, ControlModel
from diffusion.control.synthetic import (
    write_controlnet,
    write_diff_controlnet,
    write_t2i_adapter,
    write_union_controlnet,
)
from diffusion.synthetic import write_checkpoint
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("controlnet_nodes")
    checkpoints, control = root / "models" / "checkpoints", root / "models" / "controlnet"
    checkpoints.mkdir(parents=True)
    control.mkdir(parents=True)
    ckpt = Path(shutil.copy(tiny_sd15_path, checkpoints / "tiny.safetensors"))
    write_controlnet(control / "cn.safetensors", base=ckpt)
    write_diff_controlnet(control / "diff.safetensors", base=ckpt)
    write_t2i_adapter(control / "t2i.safetensors", base=ckpt)
    xl = write_checkpoint(root / "xl.safetensors", "sdxl", "tiny", 0)
    write_controlnet(control / "xl-cn.safetensors", base=xl)
    write_union_controlnet(control / "union.safetensors", base=xl, arch="union")
    shutil.copy(ckpt, control / "not-a-controlnet.safetensors")
    return root


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


def call(registry: NodeRegistry, node: str, **inputs: Any) -> tuple[Any, ...]:
    return registry[node].behaviour.execute(None, _Ctx(), inputs)


def cond(seed: int = 0) -> list:
    return [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed)), {}]]


HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))


def test_loader_reads_both_kinds_and_caches_them(registry: NodeRegistry) -> None:
    (cn,) = call(registry, "ControlNetLoader", control_net_name="cn.safetensors")
    (t2i,) = call(registry, "ControlNetLoader", control_net_name="t2i.safetensors")
    assert isinstance(cn, ControlModel) and (cn.kind, t2i.kind) == ("controlnet", "t2i_adapter")
    (again,) = call(registry, "ControlNetLoader", control_net_name="cn.safetensors")
    assert again is cn and registry.services.models.loads == 2


def test_diff_loader_adds_the_model(registry: NodeRegistry) -> None:
    model, _clip, _vae = call(registry, "CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
    (diff,) = call(registry, "DiffControlNetLoader", model=model, control_net_name="diff.safetensors")
    (plain,) = call(registry, "ControlNetLoader", control_net_name="cn.safetensors")
    a, b = diff.module.state_dict(), plain.module.state_dict()
    assert diff.layout == "diff" and max((a[k] - b[k]).abs().max().item() for k in a) < 2e-3


def test_apply_chains_controls_on_the_positive_side(registry: NodeRegistry) -> None:
    (cn,) = call(registry, "ControlNetLoader", control_net_name="cn.safetensors")
    (t2i,) = call(registry, "ControlNetLoader", control_net_name="t2i.safetensors")
    positive = cond()
    (once,) = call(registry, "ControlNetApply", conditioning=positive, control_net=cn, image=HINT, strength=0.5)
    (twice,) = call(registry, "ControlNetApply", conditioning=once, control_net=t2i, image=HINT, strength=1.0)
    control = twice[0][1]["control"]
    assert isinstance(control, Control) and twice[0][1]["control_apply_to_uncond"] is True
    assert [c.model for c in control.chain()] == [cn, t2i] and control.previous.strength == 0.5
    assert "control" not in positive[0][1]  # the input conditioning is not changed
    (same,) = call(registry, "ControlNetApply", conditioning=positive, control_net=cn, image=HINT, strength=0.0)
    assert same is positive


def test_advanced_sets_one_control_on_both_sides(registry: NodeRegistry) -> None:
    (cn,) = call(registry, "ControlNetLoader", control_net_name="cn.safetensors")
    pos, neg = call(registry, "ControlNetApplyAdvanced", positive=cond(0), negative=cond(1), control_net=cn,
                    image=HINT, strength=0.7, start_percent=0.2, end_percent=0.6)
    control = pos[0][1]["control"]
    assert neg[0][1]["control"] is control and pos[0][1]["control_apply_to_uncond"] is False
    assert control.percent_range == (0.2, 0.6) and control.strength == 0.7
    with pytest.raises(ValueError, match=r"start_percent 0\.8 is after end_percent 0\.2"):
        call(registry, "ControlNetApplyAdvanced", positive=cond(0), negative=cond(1), control_net=cn, image=HINT,
             strength=1.0, start_percent=0.8, end_percent=0.2)


def test_union_type_is_set_on_a_copy(registry: NodeRegistry) -> None:
    (cn,) = call(registry, "ControlNetLoader", control_net_name="cn.safetensors")
    (typed,) = call(registry, "SetUnionControlNetType", control_net=cn, type="depth")
    assert typed.union_type == "depth" and cn.union_type is None and typed.module is cn.module


def test_union_controlnet_loads_and_refuses_a_type_it_lacks(registry: NodeRegistry) -> None:
    (union,) = call(registry, "ControlNetLoader", control_net_name="union.safetensors")
    assert union.layout == "union" and union.union.types == 6
    (typed,) = call(registry, "SetUnionControlNetType", control_net=union, type="segment")
    assert typed.union_type == "segment" and typed.union is union.union
    with pytest.raises(ValueError, match="knows 6 control types; 'repaint' is not one of them"):
        call(registry, "SetUnionControlNetType", control_net=union, type="repaint")


def sampling_prompt(control_net: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "3": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control_net}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 255}},
        "5": {"class_type": "ControlNetApplyAdvanced",
              "inputs": {"positive": ["2", 0], "negative": ["2", 0], "control_net": ["3", 0], "image": ["4", 0],
                         "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler",
              "inputs": {"model": ["1", 0], "seed": 1, "steps": 2, "cfg": 4.0, "sampler_name": "euler",
                         "scheduler": "normal", "positive": ["5", 0], "negative": ["5", 1],
                         "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    }


@pytest.mark.parametrize(("control_net", "node", "reason"), [
    ("not-a-controlnet.safetensors", "3", "a checkpoint, not a ControlNet"),
    ("xl-cn.safetensors", "7", "ControlNet for sdxl .* does not fit this sd1 model"),
])
def test_bad_control_models_fail_at_their_node_in_one_line(registry: NodeRegistry, control_net: str, node: str,
                                                           reason: str) -> None:
    if "EmptyImage" not in registry:
        pytest.skip("EmptyImage is not registered yet")
    checked = validate_prompt(sampling_prompt(control_net), registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry, cache="none").run(checked.prompt, "p", checked.outputs)
    assert result.status == "error"
    error = result.error
    assert error["node_id"] == node, error
    message = error["exception_message"]
    assert "\n" not in message.strip()
    assert re.search(reason, message), message
