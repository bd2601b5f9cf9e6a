"""SD3 / Flux nodes on tiny synthetic models: latents, text encodes, guidance, model sampling, TripleCLIPLoader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.families import flow, loader
from diffusion.families import synthetic as fs
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sd3_flux_nodes")
    encoders = root / "models" / "text_encoders"
    for part in ("clip_l", "clip_g", "t5xxl"):
        fs.write_part(encoders / f"sd35_{part}.safetensors", part, "sd35", seed=2)
    for part in ("clip_l", "t5xxl"):
        fs.write_part(encoders / f"flux_{part}.safetensors", part, "flux-dev", seed=2)
    fs.write_part(root / "models" / "diffusion_models" / "flux.safetensors", "diffusion_model", "flux-dev", seed=2)
    return root


@pytest.fixture(scope="module")
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base)))


def call(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    """Run a node as the executor does and return its single output."""
    (out,) = registry[name].behaviour.execute(None, None, inputs)
    return out


def test_empty_sd3_latent_has_16_channels(registry: NodeRegistry) -> None:
    latent = call(registry, "EmptySD3LatentImage", width=64, height=48, batch_size=2)
    assert latent["samples"].shape == (2, 16, 6, 8) and not latent["samples"].any()


def test_triple_clip_loader_and_sd3_encode(registry: NodeRegistry) -> None:
    # T5 first: the files are told apart by their weights, not their order.
    clip = call(registry, "TripleCLIPLoader", clip_name1="sd35_t5xxl.safetensors",
                clip_name2="sd35_clip_l.safetensors", clip_name3="sd35_clip_g.safetensors")
    assert clip.family == "sd3" and clip.t5 is not None and clip.clip_g is not None
    full = call(registry, "CLIPTextEncodeSD3", clip=clip, clip_l="a cat", clip_g="a cat", t5xxl="a cat",
                empty_padding="none")
    (cond, options), = full
    assert cond.shape == (1, 77 + 77, 128) and options["pooled_output"].shape == (1, 128)
    no_t5 = call(registry, "CLIPTextEncodeSD3", clip=clip, clip_l="a cat", clip_g="a cat", t5xxl="",
                 empty_padding="none")
    assert no_t5[0][0].shape == (1, 77, 128)
    assert torch.equal(no_t5[0][0], cond[:, :77])
    padded = call(registry, "CLIPTextEncodeSD3", clip=clip, clip_l="a cat", clip_g="a cat", t5xxl="",
                  empty_padding="empty_prompt")
    assert padded[0][0].shape == (1, 154, 128)
    long = call(registry, "CLIPTextEncodeSD3", clip=clip, clip_l="a cat", clip_g=" ".join(["cat"] * 100),
                t5xxl="a cat", empty_padding="none")
    assert long[0][0].shape == (1, 2 * 77 + 77, 128)  # L padded with an empty chunk to match G's two


def test_flux_encode_and_guidance(registry: NodeRegistry) -> None:
    clip = loader.load_text_encoders(
        {"clip_l": registry.services.folders.full_path("text_encoders", "flux_clip_l.safetensors"),
         "t5xxl": registry.services.folders.full_path("text_encoders", "flux_t5xxl.safetensors")}, "flux")
    conditioning = call(registry, "CLIPTextEncodeFlux", clip=clip, clip_l="a cat", t5xxl="a cat on a mat",
                        guidance=4.0)
    (cond, options), = conditioning
    assert cond.shape == (1, 256, 128) and options["pooled_output"].shape == (1, 64)
    assert options["guidance"] == 4.0
    stronger = call(registry, "FluxGuidance", conditioning=conditioning, guidance=7.5)
    assert stronger[0][1]["guidance"] == 7.5 and options["guidance"] == 4.0  # the input is never changed
    assert stronger[0][0] is cond
    disabled = call(registry, "FluxDisableGuidance", conditioning=stronger)
    assert disabled[0][1]["guidance"] is None and "pooled_output" in disabled[0][1]
    with pytest.raises(ValueError, match="needs SD3 text encoders"):
        call(registry, "CLIPTextEncodeSD3", clip=clip, clip_l="", clip_g="", t5xxl="", empty_padding="none")


def test_model_sampling_nodes_clone_with_a_flow_schedule(registry: NodeRegistry, base: Path) -> None:
    model = loader.load_diffusion_model(base / "models" / "diffusion_models" / "flux.safetensors")
    before = model.schedule
    sd3 = call(registry, "ModelSamplingSD3", model=model, shift=5.0)
    assert sd3 is not model and model.schedule is before and sd3.model is model.model
    assert (sd3.schedule.kind, sd3.schedule.shift, sd3.schedule.multiplier) == ("discrete_flow", 5.0, 1000.0)
    aura = call(registry, "ModelSamplingAuraFlow", model=model, shift=1.73)
    assert (aura.schedule.shift, aura.schedule.multiplier) == (1.73, 1.0)
    fl = call(registry, "ModelSamplingFlux", model=model, max_shift=1.15, base_shift=0.5, width=512, height=512)
    assert fl.schedule.kind == "flux"
    assert fl.schedule.shift == pytest.approx(flow.flux_shift_for_size(512, 512))
    assert float(fl.schedule.sigmas[-1]) == 1.0


def test_lora_loader_on_flux_model_and_text_encoders(registry: NodeRegistry, base: Path) -> None:
    from diffusion.lora.synthetic import write_lora

    whole = fs.write_checkpoint(base / "flux-whole.safetensors", "flux-dev", seed=2)  # same shapes as the parts
    write_lora(base / "models" / "loras" / "flux-kohya.safetensors", base=whole, kind="lora", seed=4)
    model = call(registry, "UNETLoader", unet_name="flux.safetensors", weight_dtype="default")
    clip = call(registry, "DualCLIPLoader", clip_name1="flux_clip_l.safetensors",
                clip_name2="flux_t5xxl.safetensors", type="flux", device="default")
    lora_model, lora_clip = registry["LoraLoader"].behaviour.execute(
        None, None, {"model": model, "clip": clip, "lora_name": "flux-kohya.safetensors", "strength_model": 1.0,
                     "strength_clip": 1.0})

    def encode(c: Any) -> torch.Tensor:
        return call(registry, "CLIPTextEncodeFlux", clip=c, clip_l="a cat", t5xxl="a cat", guidance=3.5)[0][0]

    def velocity(m: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        x, cond = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 256, 128, generator=g)
        return m.velocity(x, torch.tensor([0.5]), cond, torch.randn(1, 64, generator=g), torch.tensor([3.5]))

    plain_cond, plain_v = encode(clip), velocity(model)
    assert not torch.allclose(encode(lora_clip), plain_cond) and not torch.allclose(velocity(lora_model), plain_v)
    assert torch.equal(encode(clip), plain_cond) and torch.equal(velocity(model), plain_v)  # inputs unchanged
    only_model = call(registry, "LoraLoaderModelOnly", model=model, lora_name="flux-kohya.safetensors",
                      strength_model=0.0)
    assert torch.equal(velocity(only_model), plain_v)
