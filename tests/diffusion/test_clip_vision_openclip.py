"""OpenCLIP-layout CLIP vision towers: converted to transformers' layout exactly, found by prefix, same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.control.clip_vision import encode_image, load_clip_vision, vision_config
from diffusion.control.clip_vision_openclip import (
    find_vision_prefix,
    load_clip_vision_from,
    openclip_vision_to_transformers,
    transformers_vision_to_openclip,
    vision_arch,
)
from diffusion.synthetic import save_safetensors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNCLIP = "embedder.model.visual."


def _tiny_model(seed: int = 3) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
                              patch_size=14, image_size=56, projection_dim=32, hidden_act="gelu")
    model = CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():  # the layer norms start at 1/0: make them count
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def test_round_trip_is_exact_and_outputs_match() -> None:
    model = _tiny_model()
    state = model.state_dict()
    openclip = transformers_vision_to_openclip(state, UNCLIP)
    assert openclip[UNCLIP + "transformer.resblocks.1.attn.in_proj_weight"].shape == (192, 64)
    assert openclip[UNCLIP + "proj"].shape == (64, 32) and UNCLIP + "conv1.weight" in openclip
    back = openclip_vision_to_transformers({**openclip, "model.diffusion_model.x": torch.zeros(1)}, UNCLIP)
    expected = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    assert set(back) == set(expected) and all(torch.equal(back[k], expected[k]) for k in expected)
    loaded = load_clip_vision_from(openclip, UNCLIP, precision="fp32")
    image = torch.rand(2, 56, 56, 3)
    ours, theirs = encode_image(loaded, image), encode_image(
        type(loaded)(model, 56, torch.device("cpu"), torch.float32), image)
    assert torch.equal(ours.image_embeds, theirs.image_embeds)
    assert torch.equal(ours.penultimate_hidden_states, theirs.penultimate_hidden_states)


def test_both_file_layouts_give_the_same_embeds(tmp_path: Path) -> None:
    model = _tiny_model(seed=5)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_safetensors(state, tmp_path / "hf.safetensors", {})
    save_safetensors(transformers_vision_to_openclip(state, "visual."), tmp_path / "open_clip.safetensors", {})
    svd = "conditioner.embedders.0.open_clip.model.visual."
    text = {"conditioner.embedders.0.open_clip.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 1)}
    save_safetensors({**transformers_vision_to_openclip(state, svd), **text}, tmp_path / "svd.safetensors", {})
    image = torch.rand(1, 70, 60, 3)
    hf = encode_image(load_clip_vision(tmp_path / "hf.safetensors", precision="fp32"), image)
    oc = encode_image(load_clip_vision(tmp_path / "open_clip.safetensors", precision="fp32"), image)
    with TensorFile(tmp_path / "svd.safetensors") as file:
        assert find_vision_prefix(file.shapes) == (svd, "openclip")
        inner = encode_image(load_clip_vision_from(file, svd, precision="fp32"), image)
    assert torch.equal(hf.image_embeds, oc.image_embeds) and torch.equal(hf.image_embeds, inner.image_embeds)
    assert torch.equal(hf.last_hidden_state, oc.last_hidden_state)


@pytest.mark.parametrize(("arch", "width", "layers", "mlp", "projection"), [
    ("vit-l", 1024, 24, 4096, 768), ("vit-h", 1280, 32, 5120, 1024), ("vit-g", 1664, 48, 8192, 1280)])
def test_published_shapes_are_detected(arch: str, width: int, layers: int, mlp: int, projection: int) -> None:
    config = CLIPVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                              num_attention_heads=16, patch_size=14, image_size=224, projection_dim=projection)
    with init_empty_weights():
        meta = CLIPVisionModelWithProjection(config).state_dict()
    openclip = transformers_vision_to_openclip(meta, UNCLIP)
    shapes = {k: tuple(v.shape) for k, v in openclip_vision_to_transformers(openclip, UNCLIP).items()}
    derived = vision_config(shapes)
    assert vision_arch(derived["hidden_size"]) == arch
    assert (derived["num_hidden_layers"], derived["intermediate_size"], derived["projection_dim"]) == \
        (layers, mlp, projection)
    assert derived["num_attention_heads"] == 16 and derived["image_size"] == 224
    assert derived["hidden_act"] == ("quick_gelu" if arch == "vit-l" else "gelu")


def test_text_tower_and_strange_keys_are_refused() -> None:
    text_only = {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 1)}
    assert find_vision_prefix(text_only) is None
    with pytest.raises(CheckpointError, match="no CLIP vision encoder under"):
        load_clip_vision_from(text_only, "cond_stage_model.model.")
    with pytest.raises(CheckpointError, match="not a key of an OpenCLIP vision encoder"):
        openclip_vision_to_transformers({"visual.attn_pool.q": torch.zeros(1)}, "visual.")
