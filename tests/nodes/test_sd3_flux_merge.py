"""ModelMergeFlux1 / ModelMergeSD3_2B / ModelMergeAdd on tiny synthetic Flux and SD3.5 models: ratio 1 is
model1, 0 is model2, per block in the original key layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.families import synthetic as fs
from nodes.api import Services
from nodes.folders import Folders
from nodes.object_info import object_info
from nodes.registry import NodeRegistry, build_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sd3_flux_merge")
    for seed in (2, 3):
        fs.write_part(root / "models" / "diffusion_models" / f"flux{seed}.safetensors", "diffusion_model",
                      "flux-dev", seed=seed)
        fs.write_part(root / "models" / "diffusion_models" / f"sd35_{seed}.safetensors", "diffusion_model",
                      "sd35", seed=seed)
    return build_registry(Services(folders=Folders(root)))


def call(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    (out,) = registry[name].behaviour.execute(None, None, inputs)
    return out


def weights(model: Any) -> dict[str, torch.Tensor]:
    with model.use() as module:
        return {k.removeprefix("inner."): v.detach().clone() for k, v in module.named_parameters()}


def test_flux_merge_ratio_one_and_zero(registry: NodeRegistry) -> None:
    m1 = call(registry, "UNETLoader", unet_name="flux2.safetensors", weight_dtype="default")
    m2 = call(registry, "UNETLoader", unet_name="flux3.safetensors", weight_dtype="default")
    w1, w2 = weights(m1), weights(m2)
    names = ["img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.",
             *(f"double_blocks.{i}." for i in range(19)), *(f"single_blocks.{i}." for i in range(38)), "final_layer."]
    one = call(registry, "ModelMergeFlux1", model1=m1, model2=m2, **dict.fromkeys(names, 1.0))
    zero = call(registry, "ModelMergeFlux1", model1=m1, model2=m2, **dict.fromkeys(names, 0.0))
    w_one, w_zero = weights(one), weights(zero)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    for k in w1:
        assert torch.equal(w_one[k], w1[k]), k
        assert torch.allclose(w_zero[k], w2[k], atol=1e-6), k
    # one block from model2 only: img_in (diffusers x_embedder) changes, the rest stays
    part = call(registry, "ModelMergeFlux1", model1=m1, model2=m2, **{**dict.fromkeys(names, 1.0), "img_in.": 0.0})
    w_part = weights(part)
    img_in = [k for k in w1 if "x_embedder." in k]
    assert img_in
    for k in w1:
        expected = w2[k] if k in img_in else w1[k]
        assert torch.allclose(w_part[k], expected, atol=1e-6), k
    assert all(weights(m1)[k].equal(w1[k]) for k in w1)  # base untouched


def test_sd3_block_merge_takes_one_block_from_the_second_model(registry: NodeRegistry) -> None:
    m1 = call(registry, "UNETLoader", unet_name="sd35_2.safetensors", weight_dtype="default")
    m2 = call(registry, "UNETLoader", unet_name="sd35_3.safetensors", weight_dtype="default")
    w1, w2 = weights(m1), weights(m2)
    names = list(object_info(registry)["ModelMergeSD3_2B"]["input"]["required"])[2:]
    assert names[:2] == ["pos_embed.", "x_embedder."] and names[-1] == "final_layer."
    merged = call(registry, "ModelMergeSD3_2B", model1=m1, model2=m2,
                  **{**dict.fromkeys(names, 1.0), "joint_blocks.0.": 0.0})
    w = weights(merged)
    block0 = [k for k in w1 if k.startswith("transformer_blocks.0.")]
    assert block0
    for k in w1:
        assert torch.allclose(w[k], w2[k] if k in block0 else w1[k], atol=1e-6), k


def test_add_merge_and_a_merge_across_families(registry: NodeRegistry) -> None:
    m1 = call(registry, "UNETLoader", unet_name="flux2.safetensors", weight_dtype="default")
    m2 = call(registry, "UNETLoader", unet_name="flux3.safetensors", weight_dtype="default")
    w1, w2 = weights(m1), weights(m2)
    added = weights(call(registry, "ModelMergeAdd", model1=m1, model2=m2))
    assert all(torch.allclose(added[k], w1[k] + w2[k], atol=1e-5) for k in w1)
    sd3 = call(registry, "UNETLoader", unet_name="sd35_2.safetensors", weight_dtype="default")
    with pytest.raises(ValueError, match="cannot merge"):
        call(registry, "ModelMergeSimple", model1=m1, model2=sd3, ratio=0.5)


def test_clip_merge_of_flux_text_encoders_blends_t5_and_clip_l(tmp_path: Path) -> None:
    from diffusion.families.loader import load_text_encoders
    from diffusion.patching import patched_weights

    encoders = []
    for seed in (2, 3):
        paths = {part: fs.write_part(tmp_path / f"{part}{seed}.safetensors", part, "flux-dev", seed=seed)
                 for part in ("clip_l", "t5xxl")}
        encoders.append(load_text_encoders(paths, "flux", precision="fp32"))
    registry = build_registry(Services(folders=Folders(tmp_path)))
    half = call(registry, "CLIPMergeSimple", clip1=encoders[0], clip2=encoders[1], ratio=0.25)
    for slot in ("clip_l", "t5"):
        a = {k: v.detach().clone() for k, v in getattr(encoders[0], slot).named_parameters()}
        b = {k: v.detach().clone() for k, v in getattr(encoders[1], slot).named_parameters()}
        with patched_weights(getattr(half, slot), half.slot_patches(slot)) as merged:
            got = dict(merged.named_parameters())
            for key in ("encoder.block.0.layer.0.SelfAttention.q.weight",) if slot == "t5" else \
                    ("text_model.encoder.layers.0.mlp.fc1.weight",):
                torch.testing.assert_close(got[key], 0.25 * a[key] + 0.75 * b[key])
