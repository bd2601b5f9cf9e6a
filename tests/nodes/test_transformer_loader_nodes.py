"""UNETLoader, CLIPLoader and DualCLIPLoader on SD3.5 / Flux files: the separate files give the checkpoint's
image, fp8 storage upcasts per layer, bad inputs and too little memory fail at the node in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.families import synthetic as fs
from diffusion.families.memory_check import ENV, NotEnoughMemory, parse_size
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ARCHS = ("sd35", "flux-schnell", "flux-dev")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transformer_loaders")
    models = root / "models"
    for arch in ARCHS:
        fs.write_checkpoint(models / "checkpoints" / f"{arch}.safetensors", arch, seed=5)
        fs.write_part(models / "diffusion_models" / f"{arch}.safetensors", "diffusion_model", arch, seed=5)
        for part in fs.transformer_spec(arch).text:
            fs.write_part(models / "text_encoders" / f"{arch}_{part}.safetensors", part, arch, seed=5)
    return root


@pytest.fixture(scope="module")
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


def _sample(registry: NodeRegistry, model: Any, clip: Any, vae: Any, channels: int = 16) -> torch.Tensor:
    (positive,) = _call(registry, "CLIPTextEncode", clip=clip, text="a red fox in the snow")
    (negative,) = _call(registry, "CLIPTextEncode", clip=clip, text="")
    latent = {"samples": torch.zeros(1, channels, 8, 8)}
    (out,) = _call(registry, "KSampler", model=model, seed=3, steps=2, cfg=2.0, sampler_name="euler",
                   scheduler="simple", positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    (image,) = _call(registry, "VAEDecode", samples=out, vae=vae)
    return image


def _separate_clip(registry: NodeRegistry, arch: str) -> Any:
    if arch == "sd35":  # L and G through DualCLIPLoader, with T5 from CLIPLoader's single-file sd3 form checked below
        return _call(registry, "TripleCLIPLoader", clip_name1=f"{arch}_t5xxl.safetensors",
                     clip_name2=f"{arch}_clip_g.safetensors", clip_name3=f"{arch}_clip_l.safetensors")[0]
    # Flux: T5 first; the files are told apart by their weights.
    return _call(registry, "DualCLIPLoader", clip_name1=f"{arch}_t5xxl.safetensors",
                 clip_name2=f"{arch}_clip_l.safetensors", type="flux")[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_separate_files_give_the_checkpoints_image(registry: NodeRegistry, arch: str) -> None:
    model, clip, vae = _call(registry, "CheckpointLoaderSimple", ckpt_name=f"{arch}.safetensors")
    (unet,) = _call(registry, "UNETLoader", unet_name=f"{arch}.safetensors", weight_dtype="default")
    assert unet.family == model.family and unet.variant == model.variant and unet.model is not model.model
    separate = _separate_clip(registry, arch)
    whole = _sample(registry, model, clip, vae)
    assert torch.equal(_sample(registry, unet, separate, vae), whole)
    assert whole.shape == (1, 64, 64, 3) and float(whole.std()) > 0


def test_dual_and_single_sd3_clips_encode_as_the_checkpoints_encoders(registry: NodeRegistry) -> None:
    from diffusion.families.model import FlowTextEncoder

    _m, clip, _v = _call(registry, "CheckpointLoaderSimple", ckpt_name="sd35.safetensors")
    (dual,) = _call(registry, "DualCLIPLoader", clip_name1="sd35_clip_g.safetensors",
                    clip_name2="sd35_clip_l.safetensors", type="sd3")
    assert dual.family == "sd3" and dual.t5 is None and dual.clip_l is not None and dual.clip_g is not None
    (t5_only,) = _call(registry, "CLIPLoader", clip_name="sd35_t5xxl.safetensors", type="sd3")
    assert t5_only.t5 is not None and t5_only.clip_l is None and t5_only.clip_g is None
    for ours, theirs in ((dual, FlowTextEncoder("sd3", clip.clip_l, clip.clip_g, None)),
                         (t5_only, FlowTextEncoder("sd3", None, None, clip.t5))):
        (a,) = _call(registry, "CLIPTextEncode", clip=ours, text="a red fox")
        (b,) = _call(registry, "CLIPTextEncode", clip=theirs, text="a red fox")
        assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1]["pooled_output"], b[0][1]["pooled_output"])


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_storage_upcasts_per_layer(registry: NodeRegistry, weight_dtype: str) -> None:
    (full,) = _call(registry, "UNETLoader", unet_name="flux-dev.safetensors", weight_dtype="default")
    (fp8,) = _call(registry, "UNETLoader", unet_name="flux-dev.safetensors", weight_dtype=weight_dtype)
    storage = torch.float8_e4m3fn if weight_dtype == "fp8_e4m3fn" else torch.float8_e5m2
    linear = dict(fp8.model.named_parameters())["transformer_blocks.0.attn.to_q.weight"]
    norm = dict(fp8.model.named_parameters())["transformer_blocks.0.attn.norm_q.weight"]
    assert linear.dtype == storage and norm.dtype == torch.float32 and fp8.dtype == torch.float32
    # The stored weights are the fp32 ones rounded to fp8; for compute each layer is upcast (and stored back).
    reference = dict(full.model.named_parameters())["transformer_blocks.0.attn.to_q.weight"]
    assert torch.equal(linear.float(), reference.to(storage).float())
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, pooled = torch.randn(1, 5, 128), torch.randn(1, 64)
    a = fp8.velocity(x, torch.tensor([0.7]), cond, pooled)
    b = full.velocity(x, torch.tensor([0.7]), cond, pooled)
    assert a.dtype == torch.float32 and linear.dtype == storage  # still stored in fp8 after the call
    assert 0 < float((a - b).abs().max()) < 0.25 * float(b.abs().max())
    fp8_bytes = sum(p.numel() * p.element_size() for p in fp8.model.parameters())
    full_bytes = sum(p.numel() * p.element_size() for p in full.model.parameters())
    assert fp8_bytes < 0.45 * full_bytes


def test_bad_inputs_fail_at_the_node_in_one_line(registry: NodeRegistry) -> None:
    executor = Executor(registry, cache="none")

    def error(prompt: dict[str, Any]) -> str:
        checked = validate_prompt(prompt, registry)
        assert checked.ok, checked.node_errors
        result = executor.run(checked.prompt, "p", checked.outputs)
        assert result.status == "error"
        message = result.error["exception_message"]
        assert "\n" not in message.strip()
        return message

    def clip_prompt(node: str, **inputs: Any) -> dict[str, Any]:
        return {"1": {"class_type": node, "inputs": inputs},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}

    # A T5 file where CLIP-L goes: two T5s for Flux, or a T5 for an SD1 CLIP.
    assert "a second t5xxl" in error(clip_prompt("DualCLIPLoader", clip_name1="flux-dev_t5xxl.safetensors",
                                                 clip_name2="sd35_t5xxl.safetensors", type="flux"))
    assert "a T5-XXL text encoder" in error(clip_prompt("CLIPLoader", clip_name="flux-dev_t5xxl.safetensors",
                                                        type="stable_diffusion"))
    assert "flux has no clip_g" in error(clip_prompt("DualCLIPLoader", clip_name1="sd35_clip_g.safetensors",
                                                     clip_name2="flux-dev_clip_l.safetensors", type="flux"))
    # Flux's model with SD3-type text encoders, and a 4-channel latent into the 16-channel model.
    sampler = {"seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
               "model": ["1", 0], "positive": ["3", 0], "negative": ["3", 0]}
    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux-dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd35_t5xxl.safetensors", "type": "sd3"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {**sampler, "latent_image": ["4", 0]}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }
    assert "text encoders of another family" in error(graph)
    graph["2"]["inputs"] = {"clip_name1": "flux-dev_t5xxl.safetensors", "clip_name2": "flux-dev_clip_l.safetensors",
                            "type": "flux"}
    graph["2"]["class_type"] = "DualCLIPLoader"
    graph["4"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    assert "takes 16-channel latents, got 4" in error(graph)


def test_too_little_memory_is_refused_before_loading(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_size("512M") == 512 << 20 and parse_size("2g") == 2 << 30 and parse_size("1000") == 1000
    registry = build_registry(Services(folders=Folders(base), precision="fp32"))  # an empty model cache
    before = registry.services.model_cache().loads
    monkeypatch.setenv(ENV, "10K")
    with pytest.raises(NotEnoughMemory, match=r"flux-schnell\.safetensors: loading the diffusion model needs "
                                              r"[\d.]+ [KM]iB of memory, only 10\.0 KiB is available"):
        _call(registry, "UNETLoader", unet_name="flux-schnell.safetensors", weight_dtype="fp8_e4m3fn")
    with pytest.raises(NotEnoughMemory, match="loading the text encoders needs"):
        _call(registry, "DualCLIPLoader", clip_name1="flux-schnell_t5xxl.safetensors",
              clip_name2="flux-schnell_clip_l.safetensors", type="flux")
    with pytest.raises(NotEnoughMemory, match=r"sd35\.safetensors: loading the checkpoint needs"):
        from diffusion.checkpoint import load_checkpoint

        load_checkpoint(registry.services.folders.full_path("checkpoints", "sd35.safetensors"), precision="fp32")
    assert registry.services.model_cache().loads == before  # nothing was materialised
    monkeypatch.setenv(ENV, "4G")
    (model,) = _call(registry, "UNETLoader", unet_name="flux-schnell.safetensors", weight_dtype="fp8_e4m3fn")
    assert model.family == "flux"


def test_the_model_caches_other_models_count_as_free_and_are_dropped(base: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.families.loader import file_bytes

    registry = build_registry(Services(folders=Folders(base), precision="fp32"))
    cache = registry.services.model_cache()
    _call(registry, "CLIPLoader", clip_name="sd35_t5xxl.safetensors", type="sd3")
    held = sum(e["bytes"] for e in cache.resident())
    path = registry.services.folders.full_path("diffusion_models", "flux-schnell.safetensors")
    needed = file_bytes(path, precision="fp32", parts=("model",))
    assert needed is not None and held > 0
    monkeypatch.setenv(ENV, str(needed - 1))  # short by one byte without the cached T5
    (model,) = _call(registry, "UNETLoader", unet_name="flux-schnell.safetensors", weight_dtype="default")
    assert model.family == "flux" and [e["path"] for e in cache.resident()] == [str(path.resolve())]
    cache.unload()
    monkeypatch.delenv(ENV)
    _call(registry, "CLIPLoader", clip_name="sd35_t5xxl.safetensors", type="sd3")
    monkeypatch.setenv(ENV, str(needed // 2))
    if held < needed // 2:  # the cached T5 is too small to make up the difference: refused, T5 kept
        with pytest.raises(NotEnoughMemory, match="the model cache can free"):
            _call(registry, "UNETLoader", unet_name="flux-schnell.safetensors", weight_dtype="default")
        assert len(cache) == 1
