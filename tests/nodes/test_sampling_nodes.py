"""KSampler, KSamplerAdvanced and the VAE nodes: ComfyUI's definitions, progress, previews, interruption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.models import LoadedCheckpoint
from diffusion.sampling import SAMPLER_NAMES, SCHEDULER_NAMES
from graph.schema import ExecutionInterrupted
from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry

TOOLTIPS = {
    "model": "The model used for denoising the input latent.",
    "seed": "The random seed used for creating the noise.",
    "steps": "The number of steps used in the denoising process.",
    "latent_image": "The latent image to denoise.",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path_factory.mktemp("nodes")), precision="fp32"))


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


class Ctx:
    """An executor context that records progress and can stop after some steps."""

    node_id = "3"
    prompt_id = "p"

    def __init__(self, extra_data: dict | None = None, stop_after: int | None = None) -> None:
        self.extra_data = extra_data or {}
        self.stop_after = stop_after
        self.steps: list[tuple[int, int, Any]] = []

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Record the step; raise as the executor does once interrupted."""
        if self.stop_after is not None and len(self.steps) >= self.stop_after:
            raise ExecutionInterrupted("Processing interrupted")
        self.steps.append((value, total, preview))

    def check_interrupted(self) -> None:
        """Not used by the samplers."""


def test_ksampler_definition(registry: NodeRegistry) -> None:
    info = node_info(registry["KSampler"])
    required = info["input"]["required"]
    assert info["input_order"]["required"] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                               "positive", "negative", "latent_image", "denoise"]
    assert required["seed"] == ["INT", {"default": 0, "min": 0, "max": 0xFFFF_FFFF_FFFF_FFFF,
                                        "control_after_generate": True, "tooltip": TOOLTIPS["seed"]}]
    assert required["steps"] == ["INT", {"default": 20, "min": 1, "max": 10000, "tooltip": TOOLTIPS["steps"]}]
    assert required["cfg"][1] | {"tooltip": ""} == {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                                     "round": 0.01, "tooltip": ""}
    assert required["sampler_name"][0] == list(SAMPLER_NAMES) and required["sampler_name"][0][0] == "euler"
    assert required["scheduler"][0] == list(SCHEDULER_NAMES)
    assert required["denoise"][1]["default"] == 1.0 and required["denoise"][1]["step"] == 0.01
    assert required["model"] == ["MODEL", {"tooltip": TOOLTIPS["model"]}]
    assert required["latent_image"] == ["LATENT", {"tooltip": TOOLTIPS["latent_image"]}]
    assert info["output"] == ["LATENT"] and info["output_tooltips"] == ["The denoised latent."]
    assert info["description"] == "Uses the provided model, positive and negative conditioning to denoise the " \
                                  "latent image."


def test_ksampler_advanced_definition(registry: NodeRegistry) -> None:
    info = node_info(registry["KSamplerAdvanced"])
    required = info["input"]["required"]
    assert info["input_order"]["required"] == [
        "model", "add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
        "latent_image", "start_at_step", "end_at_step", "return_with_leftover_noise"]
    assert required["add_noise"] == [["enable", "disable"]]
    assert required["return_with_leftover_noise"] == [["disable", "enable"]]
    assert required["end_at_step"] == ["INT", {"default": 10000, "min": 0, "max": 10000}]
    assert required["noise_seed"][1]["control_after_generate"] is True
    assert info["display_name"] == "KSampler (Advanced)" and info["category"] == "sampling"


def test_vae_node_definitions(registry: NodeRegistry) -> None:
    decode = node_info(registry["VAEDecode"])
    assert decode["input"]["required"] == {"samples": ["LATENT", {"tooltip": "The latent to be decoded."}],
                                           "vae": ["VAE", {"tooltip": "The VAE model used for decoding the latent."}]}
    assert decode["description"] == "Decodes latent images back into pixel space images."
    assert node_info(registry["VAEEncode"])["input"]["required"] == {"pixels": ["IMAGE"], "vae": ["VAE"]}
    tiled = node_info(registry["VAEDecodeTiled"])
    assert tiled["input_order"]["required"] == ["samples", "vae", "tile_size", "overlap", "temporal_size",
                                                "temporal_overlap"]
    assert tiled["input"]["required"]["tile_size"] == ["INT", {"default": 512, "min": 64, "max": 4096, "step": 32}]
    assert tiled["display_name"] == "VAE Decode (Tiled)" and tiled["category"] == "_for_testing"
    enc = node_info(registry["VAEEncodeTiled"])["input"]["required"]
    assert enc["tile_size"][1]["step"] == 64
    assert enc["temporal_size"][1]["tooltip"] == "Only used for video VAEs: Amount of frames to encode at a time."


def _sample(registry: NodeRegistry, ckpt: LoadedCheckpoint, ctx: Ctx, steps: int = 3) -> Any:
    pos = [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1)), {}]]
    inputs = {"model": ckpt.unet, "seed": 1, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
              "scheduler": "karras", "positive": pos, "negative": pos,
              "latent_image": {"samples": torch.zeros(1, 4, 8, 8)}, "denoise": 1.0}
    return registry["KSampler"].behaviour.execute(None, ctx, inputs)


def test_progress_and_previews_per_step(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    ctx = Ctx()
    (latent,) = _sample(registry, ckpt, ctx)
    assert latent["samples"].shape == (1, 4, 8, 8)
    assert [(v, t) for v, t, _ in ctx.steps] == [(1, 3), (2, 3), (3, 3)]
    kind, image, size = ctx.steps[0][2]
    assert kind == "JPEG" and image.size == (8, 8) and size is None
    for method in ("auto", "latent2rgb", "taesd"):
        ctx = Ctx({"preview_method": method})
        _sample(registry, ckpt, ctx, steps=1)
        assert ctx.steps[0][2] is not None
    quiet = Ctx({"preview_method": "none"})
    _sample(registry, ckpt, quiet, steps=2)
    assert [p for _, _, p in quiet.steps] == [None, None]


def test_interruption_stops_the_sampler(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    ctx = Ctx(stop_after=2)
    with pytest.raises(ExecutionInterrupted):
        _sample(registry, ckpt, ctx, steps=20)
    assert len(ctx.steps) == 2


def test_vae_nodes_round_trip_shapes(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    image = torch.rand(1, 45, 70, 3)
    (latent,) = registry["VAEEncode"].behaviour.execute(None, Ctx(), {"pixels": image, "vae": ckpt.vae})
    assert latent["samples"].shape == (1, 4, 5, 8)
    (decoded,) = registry["VAEDecode"].behaviour.execute(None, Ctx(), {"samples": latent, "vae": ckpt.vae})
    assert decoded.shape == (1, 40, 64, 3) and float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0
    (tiled,) = registry["VAEDecodeTiled"].behaviour.execute(None, Ctx(), {
        "samples": latent, "vae": ckpt.vae, "tile_size": 512, "overlap": 64, "temporal_size": 64,
        "temporal_overlap": 8})
    assert torch.allclose(tiled, decoded, atol=1e-5)  # one tile covers it all
    (enc,) = registry["VAEEncodeTiled"].behaviour.execute(None, Ctx(), {
        "pixels": image, "vae": ckpt.vae, "tile_size": 512, "overlap": 64, "temporal_size": 64,
        "temporal_overlap": 8})
    assert torch.allclose(enc["samples"], latent["samples"], atol=1e-5)
