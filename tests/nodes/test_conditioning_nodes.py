"""Conditioning nodes on tiny random CLIP text models: the list format, clip skip, area, zero-out, SDXL, embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusion.text import ClipTextEncoder
from diffusion.tokenizer import BOS, EOS
from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry

L_DIM, G_DIM, G_PROJ = 32, 48, 24
CAT, DOG = 2368, 1929
LONG = " ".join(["cat"] * 100)  # 100 tokens: two chunks


def _config(hidden: int, projection: int = 16) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=projection,
                          bos_token_id=BOS, eos_token_id=EOS)


@pytest.fixture(scope="module")
def clip_l() -> CLIPTextModel:
    torch.manual_seed(0)
    return CLIPTextModel(_config(L_DIM)).eval()


@pytest.fixture(scope="module")
def clip_g() -> CLIPTextModelWithProjection:
    torch.manual_seed(1)
    return CLIPTextModelWithProjection(_config(G_DIM, G_PROJ)).eval()


@pytest.fixture(scope="module")
def sd1(clip_l: CLIPTextModel) -> ClipTextEncoder:
    return ClipTextEncoder("sd1", clip_l)


@pytest.fixture(scope="module")
def sdxl(clip_l: CLIPTextModel, clip_g: CLIPTextModelWithProjection) -> ClipTextEncoder:
    return ClipTextEncoder("sdxl", clip_l, clip_g)


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path)


@pytest.fixture
def registry(folders: Folders) -> NodeRegistry:
    return build_registry(Services(folders=folders))



def call(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    """Run a node as the executor does (its schema behaviour) and return its single output.

    No executor context is passed: these nodes never report progress.
    """
    (out,) = registry[name].behaviour.execute(None, None, inputs)
    return out


def test_specs_match_comfyui(registry: NodeRegistry) -> None:
    encode = node_info(registry["CLIPTextEncode"])
    assert encode["input"]["required"] == {
        "text": ["STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}],
        "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}],
    }
    assert encode["display_name"] == "CLIP Text Encode (Prompt)" and encode["output"] == ["CONDITIONING"]
    last = node_info(registry["CLIPSetLastLayer"])["input"]["required"]
    assert last["stop_at_clip_layer"] == ["INT", {"default": -1, "min": -24, "max": -1, "step": 1}]
    area = node_info(registry["ConditioningSetArea"])["input"]["required"]
    assert area["width"] == ["INT", {"default": 64, "min": 64, "max": 16384, "step": 8}]
    assert area["strength"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    xl = node_info(registry["CLIPTextEncodeSDXL"])
    assert xl["input_order"]["required"] == ["clip", "width", "height", "crop_w", "crop_h", "target_width",
                                             "target_height", "text_g", "text_l"]
    assert xl["input"]["required"]["target_width"] == ["INT", {"default": 1024, "min": 0, "max": 16384}]
    assert xl["category"] == "advanced/conditioning"
    refiner = node_info(registry["CLIPTextEncodeSDXLRefiner"])
    assert refiner["input_order"]["required"] == ["ascore", "width", "height", "text", "clip"]
    assert refiner["input"]["required"]["ascore"] == ["FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0,
                                                                "step": 0.01}]


def test_clip_text_encode_makes_one_entry_with_pooled(registry: NodeRegistry, sd1: ClipTextEncoder) -> None:
    conditioning = call(registry, "CLIPTextEncode", text="a cat", clip=sd1)
    ((cond, options),) = conditioning
    expected, pooled = sd1.encode("a cat")
    assert cond.shape == (1, 77, L_DIM) and list(options) == ["pooled_output"]
    torch.testing.assert_close(cond, expected, rtol=0, atol=0)
    torch.testing.assert_close(options["pooled_output"], pooled, rtol=0, atol=0)
    (long_cond, _), = call(registry, "CLIPTextEncode", text=LONG, clip=sd1)
    assert long_cond.shape == (1, 154, L_DIM)
    with pytest.raises(RuntimeError, match="clip input is invalid"):
        call(registry, "CLIPTextEncode", text="a cat", clip=None)


def test_embeddings_come_from_the_registrys_folder(
    registry: NodeRegistry, folders: Folders, sd1: ClipTextEncoder, clip_l: CLIPTextModel
) -> None:
    embeddings = folders.models_dir / "embeddings"
    embeddings.mkdir(parents=True)
    table = clip_l.embeddings.token_embedding.weight.detach()
    save_file({"emb_params": table[[CAT, DOG]].clone()}, str(embeddings / "pets.safetensors"))
    ((cond, _),) = call(registry, "CLIPTextEncode", text="a embedding:pets", clip=sd1)
    torch.testing.assert_close(cond, sd1.encode("a cat dog")[0], rtol=0, atol=1e-6)


def test_clip_set_last_layer_returns_a_skipping_copy(registry: NodeRegistry, sd1: ClipTextEncoder) -> None:
    skipped = call(registry, "CLIPSetLastLayer", clip=sd1, stop_at_clip_layer=-2)
    assert skipped.clip_skip == -2 and sd1.clip_skip is None
    ((cond, _),) = call(registry, "CLIPTextEncode", text="a cat", clip=skipped)
    torch.testing.assert_close(cond, sd1.encode("a cat", clip_skip=-2)[0], rtol=0, atol=0)
    assert not torch.allclose(cond, sd1.encode("a cat")[0])


def test_combine_set_area_and_zero_out(registry: NodeRegistry) -> None:
    a = [[torch.ones(1, 77, 4), {"pooled_output": torch.ones(1, 4)}]]
    b = [[torch.full((1, 77, 4), 2.0), {"pooled_output": torch.ones(1, 4), "strength": 0.5}]]
    combined = call(registry, "ConditioningCombine", conditioning_1=a, conditioning_2=b)
    assert len(combined) == 2 and combined[0] is a[0] and combined[1] is b[0]

    area = call(registry, "ConditioningSetArea", conditioning=combined, width=512, height=256, x=64, y=72,
                strength=0.8)
    assert [entry[1]["area"] for entry in area] == [(32, 64, 9, 8)] * 2
    assert all(e[1]["strength"] == 0.8 and e[1]["set_area_to_bounds"] is False for e in area)
    assert area[0][0] is a[0][0] and "area" not in a[0][1] and b[0][1]["strength"] == 0.5  # inputs untouched

    zeroed = call(registry, "ConditioningZeroOut", conditioning=area)
    assert not zeroed[1][0].any() and not zeroed[1][1]["pooled_output"].any()
    assert zeroed[1][1]["area"] == (32, 64, 9, 8) and a[0][0].all()


def test_sdxl_encodes_g_and_l_texts_separately(registry: NodeRegistry, sdxl: ClipTextEncoder) -> None:
    sizes = {"width": 1024, "height": 768, "crop_w": 8, "crop_h": 16, "target_width": 2048, "target_height": 1536}
    ((cond, options),) = call(registry, "CLIPTextEncodeSDXL", clip=sdxl, text_g="a cat", text_l="a dog", **sizes)
    assert cond.shape == (1, 77, L_DIM + G_DIM)
    assert options.keys() == {"pooled_output", *sizes} and all(options[k] == v for k, v in sizes.items())
    g_cond, g_pooled = sdxl.encode("a cat")
    l_cond, _ = sdxl.encode("a dog")
    torch.testing.assert_close(cond[..., L_DIM:], g_cond[..., L_DIM:], rtol=0, atol=0)
    torch.testing.assert_close(cond[..., :L_DIM], l_cond[..., :L_DIM], rtol=0, atol=0)
    torch.testing.assert_close(options["pooled_output"], g_pooled, rtol=0, atol=0)
    assert g_pooled.shape == (1, G_PROJ)


def test_sdxl_pads_the_shorter_text_with_empty_chunks(registry: NodeRegistry, sdxl: ClipTextEncoder) -> None:
    ((cond, _),) = call(registry, "CLIPTextEncodeSDXL", clip=sdxl, width=1024, height=1024, crop_w=0, crop_h=0,
                        target_width=1024, target_height=1024, text_g=LONG, text_l="a dog")
    assert cond.shape == (1, 154, L_DIM + G_DIM)
    empty, _ = sdxl.encode("")
    torch.testing.assert_close(cond[:, 77:, :L_DIM], empty[..., :L_DIM], rtol=0, atol=0)
    with pytest.raises(ValueError, match="clip_l and clip_g"):
        call(registry, "CLIPTextEncodeSDXL", clip=ClipTextEncoder("sd1", sdxl.clip_l), width=1024, height=1024,
             crop_w=0, crop_h=0, target_width=1024, target_height=1024, text_g="a", text_l="b")


def test_sdxl_refiner_carries_aesthetic_score(registry: NodeRegistry, clip_g: CLIPTextModelWithProjection) -> None:
    refiner = ClipTextEncoder("sdxl_refiner", clip_g=clip_g)
    ((cond, options),) = call(registry, "CLIPTextEncodeSDXLRefiner", ascore=2.5, width=896, height=1152,
                              text="a cat", clip=refiner)
    assert cond.shape == (1, 77, G_DIM)
    assert options.keys() == {"pooled_output", "aesthetic_score", "width", "height"}
    assert (options["aesthetic_score"], options["width"], options["height"]) == (2.5, 896, 1152)
