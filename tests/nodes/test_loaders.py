"""CheckpointLoaderSimple and VAELoader: ComfyUI's definitions, the model cache, /free."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from diffusion.models import UNetModel, VAEModel
from diffusion.text import ClipTextEncoder
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("loaders")
    (root / "models" / "checkpoints").mkdir(parents=True)
    ckpt = shutil.copy(tiny_sd15_path, root / "models" / "checkpoints" / "tiny.safetensors")
    (root / "models" / "vae").mkdir(parents=True)
    shutil.copy(ckpt, root / "models" / "vae" / "tiny-vae.safetensors")  # first_stage_model.* keys: a VAE file too
    return root


@pytest.fixture
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


def test_definitions_match_comfyui(registry: NodeRegistry) -> None:
    info = node_info(registry["CheckpointLoaderSimple"])
    assert info["input"]["required"] == {
        "ckpt_name": [["tiny.safetensors"], {"tooltip": "The name of the checkpoint (model) to load."}]}
    assert info["output"] == ["MODEL", "CLIP", "VAE"] and info["output_name"] == ["MODEL", "CLIP", "VAE"]
    assert info["display_name"] == "Load Checkpoint" and info["category"] == "loaders"
    assert info["description"] == "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."
    assert info["output_tooltips"][2] == ("The VAE model used for encoding and decoding images to and from "
                                          "latent space.")
    vae = node_info(registry["VAELoader"])
    assert vae["input"]["required"] == {"vae_name": [["tiny-vae.safetensors", "pixel_space"]]}  # as ComfyUI lists
    assert vae["output"] == ["VAE"] and vae["display_name"] == "Load VAE" and vae["description"] == ""


def test_models_load_once_into_the_cache_and_free_drops_them(registry: NodeRegistry) -> None:
    services = registry.services
    assert services.models is None  # nothing loaded while building the registry
    assert services.free_models() == 0
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
              "2": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-vae.safetensors"}}}
    executor = Executor(registry, cache="none")
    checked = validate_prompt({**prompt, "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
                               "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}, registry)
    assert checked.ok, checked.node_errors
    for _ in range(2):
        result = executor.run(checked.prompt, "p", checked.outputs)
        assert result.status == "success", result.error
    cache = services.models
    assert cache.loads == 2  # checkpoint and VAE, once each over two runs without the output cache
    assert len(cache.resident()) == 2
    loaded = cache.get(registry.services.folders.full_path("checkpoints", "tiny.safetensors"),
                       ("checkpoint", "fp32", services.compile), lambda: pytest.fail("should be cached"))
    assert isinstance(loaded.unet, UNetModel) and isinstance(loaded.clip, ClipTextEncoder)
    assert isinstance(loaded.vae, VAEModel) and loaded.unet.dtype == torch.float32
    assert services.free_models() == 2 and len(cache) == 0


def test_precision_comes_from_the_services(base: Path) -> None:
    registry = build_registry(Services(folders=Folders(base), precision="bf16"))
    model, _clip, vae = registry["CheckpointLoaderSimple"].behaviour.execute(
        None, _Ctx(), {"ckpt_name": "tiny.safetensors"})
    assert model.dtype == torch.bfloat16 and vae.dtype == torch.bfloat16


class _Ctx:
    """A bare executor context for calling a node directly."""

    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""
