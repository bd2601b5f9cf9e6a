"""Custom node packs that use ComfyUI's module surface: core classes, common_ksampler, progress, V3, patching."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from pack_kit import PACKS, QuietContext, call, pack_registry, run_prompt

from nodes.comfy_surface import NotProvidedError, runtime
from nodes.object_info import node_info
from nodes.registry import NodeRegistry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> NodeRegistry:
    return pack_registry(tmp_path_factory.mktemp("packs"), [PACKS], tiny_sd15_path)


@pytest.fixture(scope="module")
def parts(registry: NodeRegistry) -> dict:
    model, clip, vae = call(registry, "CheckpointLoaderSimple", ckpt_name="tiny.safetensors")
    (positive,) = call(registry, "CLIPTextEncode", clip=clip, text="a red square")
    (negative,) = call(registry, "CLIPTextEncode", clip=clip, text="")
    (latent,) = call(registry, "EmptyLatentImage", width=32, height=32, batch_size=1)
    return {"model": model, "clip": clip, "vae": vae, "positive": positive, "negative": negative, "latent": latent}


def test_every_pack_loads_and_our_own_packages_stay_ours(registry: NodeRegistry) -> None:
    assert registry.load_report == []
    assert set(registry.custom_packs) == {"patcher_pack", "progress_pack", "route_pack", "sampler_pack",
                                          "top_names_pack", "v3_pack"}
    import nodes
    import server

    assert nodes.__file__.endswith("nodes/__init__.py") and server.__file__.endswith("server/__init__.py")
    assert "custom_nodes" not in nodes.__dict__
    pack_module = sys.modules["custom_nodes.sampler_pack.sampler_nodes"]
    assert pack_module.nodes.__name__ == "nodes.comfy_surface.nodes"  # the pack's `import nodes`
    assert sys.modules["custom_nodes.sampler_pack.lib.steps"].MIN_STEPS == 1  # two-level relative import
    assert importlib.import_module("comfy.utils") is importlib.import_module("nodes.comfy_surface.comfy.utils")
    assert node_info(registry["HalfStepKSampler"])["display_name"] == "KSampler (half steps)"
    # Inherited INPUT_TYPES: the subclass offers exactly the core KSampler's inputs.
    assert node_info(registry["HalfStepKSampler"])["input"] == node_info(registry["KSampler"])["input"]


def test_names_not_provided_raise_naming_them(registry: NodeRegistry) -> None:
    with pytest.raises(ModuleNotFoundError, match=r"comfy\.ldm") as caught:
        importlib.import_module("comfy.ldm.modules.attention")
    assert caught.value.name == "comfy.ldm"
    import comfy.utils

    with pytest.raises(NotProvidedError, match=r"comfy\.utils\.no_such_thing"):
        comfy.utils.no_such_thing  # noqa: B018
    surface_nodes = importlib.import_module("nodes.comfy_surface.nodes")
    with pytest.raises(AttributeError, match=r"nodes\.NoSuchNode"):
        surface_nodes.NoSuchNode  # noqa: B018


def test_subclassed_ksampler_and_common_ksampler_match_the_core_sampler(registry: NodeRegistry, parts: dict) -> None:
    common = {k: parts[k] for k in ("model", "positive", "negative")}
    (reference,) = call(registry, "KSampler", seed=5, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                        latent_image=parts["latent"], denoise=1.0, **common)
    ctx = QuietContext()
    (half,) = call(registry, "HalfStepKSampler", ctx, seed=5, steps=4, cfg=5.0, sampler_name="euler",
                   scheduler="normal", latent_image=parts["latent"], denoise=1.0, **common)
    assert torch.equal(half["samples"], reference["samples"])
    assert ctx.steps == [(1, 2), (2, 2)]  # progress reached the running node
    (via_common,) = call(registry, "CommonKSamplerNode", seed=5, steps=2, sampler_name="euler", scheduler="normal",
                         latent=parts["latent"], **common)
    assert torch.equal(via_common["samples"], reference["samples"])
    assert not torch.equal(reference["samples"], parts["latent"]["samples"])


def test_core_classes_called_with_comfyuis_argument_order(registry: NodeRegistry, parts: dict) -> None:
    (combined,) = call(registry, "EncodeTwice", clip=parts["clip"], text="a red square")
    assert len(combined) == 2
    assert torch.equal(combined[0][0], parts["positive"][0][0])
    assert not torch.equal(combined[1][0], parts["positive"][0][0])


def test_progress_bar_and_send_sync_reach_the_node_and_the_client(registry: NodeRegistry,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "server_sink", None)  # no server here: events are kept in runtime.sent
    runtime.sent.clear()
    prompt = {"4": {"class_type": "CountWithProgress", "inputs": {"count": 3}}}
    result, events = run_prompt(registry, prompt, extra_data={"client_id": "client-1"})
    assert result.status == "success", result.error
    assert [(d["value"], d["max"], d["node"]) for e, d in events if e == "progress"] == [(1, 3, "4"), (2, 3, "4"),
                                                                                        (3, 3, "4")]
    assert runtime.sent[-1] == ("progress_pack.done", {"node": "4", "count": 3, "client_id": "client-1",
                                                       "last_node_id": "4"}, None)
    assert result.outputs["4"] == {"text": ["3"]}
    assert "progress_pack counted" not in capsys.readouterr().out  # pack stdout goes to the log


def test_v3_pack_schema_execution_validation_and_fingerprint(registry: NodeRegistry) -> None:
    info = node_info(registry["V3RepeatText"])
    assert (info["display_name"], info["category"], info["description"]) == (
        "Repeat Text (V3)", "test/v3", "Repeats a text.")
    assert info["input"]["required"]["times"] == ["INT", {"tooltip": "How many copies.", "default": 2, "min": 1,
                                                          "max": 10}]
    assert info["input"]["required"]["joiner"] == [["none", "dash"], {"default": "none"}]
    assert info["input"]["optional"]["unused"][0] == "FLOAT"
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert info["output"] == ["STRING", "INT"] and info["output_name"] == ["repeated", "length"]
    assert info["output_node"] is True
    prompt = {"9": {"class_type": "V3RepeatText", "inputs": {"text": "ab", "times": 3, "joiner": "dash"}}}
    result, _ = run_prompt(registry, prompt)
    assert result.status == "success", result.error
    assert result.outputs["9"] == {"text": ["9:ab-ab-ab"]}
    behaviour = registry["V3RepeatText"].behaviour
    assert behaviour.fingerprint({"text": "x", "times": 2, "joiner": "none"}) == "x*2"
    assert behaviour.validate({"times": 7}) == "7 is unlucky"
    assert call(registry, "V3MaskMean", mask=torch.ones(1, 4, 4) * 0.25)["result"] == (0.25,)


def test_model_patched_through_the_model_patcher(registry: NodeRegistry, parts: dict) -> None:
    model = parts["model"]
    (patched,) = call(registry, "ScaledGuidance", model=model, scale=0.5)
    assert type(patched) is type(model)  # our own nodes get our MODEL value back
    assert patched.model is model.model  # shared base weights, no copy
    assert callable(patched.options["sampler_cfg_function"])
    assert patched.options["disable_cfg1_optimization"] is True
    assert len(patched.options["transformer_options"]["patches"]["attn1_patch"]) == 1
    assert "sampler_cfg_function" not in model.options  # the input MODEL is unchanged


def test_pack_using_the_twenty_most_used_names(registry: NodeRegistry) -> None:
    info = node_info(registry["CheckpointReport"])
    assert info["input"]["required"]["ckpt_name"] == [["tiny.safetensors"]]
    ctx = QuietContext()
    text, cond, image = call(registry, "CheckpointReport", ctx, ckpt_name="tiny.safetensors", sampler_name="euler",
                             scheduler="karras", size=16)
    assert text.endswith("; ModelPatcher; euler/karras; True") and " keys on cpu" in text
    assert int(text.split()[0]) > 100
    assert cond[0][0].shape[:2] == (1, 77)
    assert image.shape == (1, 16, 16, 3) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert ctx.steps == [(1, 3), (2, 3), (3, 3)]
    temp = Path(registry.services.folders.temp_dir) / "top_names_pack.txt"
    assert temp.read_text() == text.split()[0]


def test_small_comfy_helpers_have_comfyuis_values(registry: NodeRegistry) -> None:
    from comfy import latent_formats, model_base, model_sampling
    from comfy.k_diffusion import sampling

    assert latent_formats.SD15().scale_factor == 0.18215 and latent_formats.SDXL.scale_factor == 0.13025
    flux = latent_formats.Flux()
    x = torch.tensor([0.5])
    assert torch.allclose(flux.process_out(flux.process_in(x)), x)
    assert model_base.ModelType.FLOW.value == 6
    assert model_sampling.time_snr_shift(3.0, 0.5) == pytest.approx(0.75)
    d = sampling.to_d(torch.ones(1, 4, 2, 2), torch.tensor([2.0]), torch.zeros(1, 4, 2, 2))
    assert torch.equal(d, torch.full((1, 4, 2, 2), 0.5))
    sigmas = sampling.get_sigmas_karras(4, 0.1, 10.0)
    assert sigmas[0] == pytest.approx(10.0) and sigmas[-1] == 0


def test_core_class_attributes_packs_read(registry: NodeRegistry) -> None:
    surface_nodes = importlib.import_module("nodes.comfy_surface.nodes")
    assert surface_nodes.ImageScale.upscale_methods == ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
    assert surface_nodes.ImageScale.crop_methods == ["disabled", "center"]
    assert surface_nodes.KSampler.FUNCTION == "sample" and surface_nodes.KSampler.RETURN_TYPES == ("LATENT",)
    assert surface_nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"] is surface_nodes.CLIPTextEncode
    assert "HalfStepKSampler" in surface_nodes.NODE_CLASS_MAPPINGS  # packs' classes too, as in ComfyUI
    from comfy_extras.nodes_latent import LatentBatch

    (batch,) = LatentBatch().batch({"samples": torch.zeros(1, 4, 2, 2)}, {"samples": torch.ones(1, 4, 2, 2)})
    assert batch["samples"].shape == (2, 4, 2, 2)


def test_lora_state_dict_applied_as_the_lora_loader_does(registry: NodeRegistry, parts: dict,
                                                         tiny_sd15_path: Path) -> None:
    from diffusion.lora.synthetic import write_lora

    loras = Path(registry.services.folders.paths("loras")[0])
    loras.mkdir(parents=True, exist_ok=True)
    write_lora(loras / "pack_style.safetensors", base=tiny_sd15_path, rank=4, seed=3, kind="lora")
    model, clip = parts["model"], parts["clip"]
    ours_model, ours_clip = call(registry, "LoraLoader", model=model, clip=clip, lora_name="pack_style.safetensors",
                                 strength_model=0.7, strength_clip=0.7)
    pack_model, pack_clip = call(registry, "LoraFromStateDict", model=model, clip=clip,
                                 lora_name="pack_style.safetensors", strength=0.7)
    assert type(pack_model) is type(model) and pack_model.model is model.model
    assert pack_model.weight_patches and set(pack_model.weight_patches) == set(ours_model.weight_patches)
    assert pack_clip.weight_patches and set(pack_clip.weight_patches) == set(ours_clip.weight_patches)
    assert [e.strength for e in next(iter(pack_model.weight_patches.values()))] == [0.7]
    assert not model.weight_patches  # the input MODEL is unchanged
