"""LoRAs on the SD3.5 and Flux transformers and their text encoders (diffusion.lora.transformer).

The same seeded random change written in sd-scripts' layout (original names, fused q/k/v) and in
diffusers' (split layers, halves swapped where diffusers swaps them) must patch the same weights;
the base comes back bit for bit; LoHa on a fused layer equals LoHa on the fused weight.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.families.loader import load_transformer_checkpoint
from diffusion.families.synthetic import write_checkpoint
from diffusion.lora.load import LoraError, lora_patches, read_lora
from diffusion.lora.lycoris import LohaAdapter
from diffusion.lora.synthetic import write_lora
from diffusion.lora.transformer import Target, place


@pytest.fixture(scope="module", params=["flux-schnell", "sd35"])
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp(f"tlora-{request.param}")
    ckpt = write_checkpoint(root / f"{request.param}.safetensors", request.param, "tiny", seed=1)
    loaded = load_transformer_checkpoint(ckpt, precision="fp32")
    return ckpt, loaded, root


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def patched_model(value: Any) -> dict[str, torch.Tensor]:
    with value.use() as call:
        return {k.removeprefix("inner."): v.detach().clone() for k, v in call.named_parameters()}


def patched_text(clip: Any) -> dict[str, torch.Tensor]:
    from diffusion.patching import patched_weights

    out: dict[str, torch.Tensor] = {}
    for slot in ("clip_l", "clip_g", "t5"):
        module = getattr(clip, slot)
        if module is not None:
            with patched_weights(module, clip.slot_patches(slot)) as m:
                out.update({f"{slot}.{k}": v.detach().clone() for k, v in m.named_parameters()})
    return out


def test_kohya_and_diffusers_layouts_patch_the_same_weights(base: tuple[Path, Any, Path]) -> None:
    ckpt, loaded, root = base
    model, clip = loaded.model, loaded.clip
    before, before_text = params(model.model), patched_text(clip)
    results = []
    for kind in ("lora", "diffusers-lora"):
        lora = read_lora(write_lora(root / f"{kind}.safetensors", base=ckpt, kind=kind, rank=4, seed=3))
        placed = lora_patches(lora, model, clip)
        assert not placed.unknown and not placed.misfits, (placed.unknown[:3], placed.misfits[:3])
        results.append((patched_model(model.with_patches(placed.unet)), patched_text(clip.with_patches(placed.clip))))
    (k_model, k_text), (d_model, d_text) = results
    changed = [k for k in before if not torch.equal(k_model[k], before[k])]
    fused_parts = [k for k in changed if k.endswith(("attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight"))]
    assert fused_parts and any("norm_out.linear" in k for k in changed)  # fused q/k/v and a swapped adaLN
    for k in before:
        torch.testing.assert_close(k_model[k], d_model[k], rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.equal(k_text[k], before_text[k]) for k in before_text if k.startswith("t5."))
    assert any(not torch.equal(k_text[k], before_text[k]) for k in before_text if k.startswith("clip_l."))
    for k in before_text:
        torch.testing.assert_close(k_text[k], d_text[k], rtol=1e-5, atol=1e-6, msg=k)
    # the base comes back exactly, and the conditioning with it
    assert all(torch.equal(v, before[k]) for k, v in patched_model(model).items())
    assert all(torch.equal(v, before_text[k]) for k, v in patched_text(clip).items())


def test_fused_rows_are_the_lora_rows_and_strength_scales_them(base: tuple[Path, Any, Path]) -> None:
    ckpt, loaded, root = base
    model = loaded.model
    lora = read_lora(write_lora(root / "rows.safetensors", base=ckpt, kind="lora", rank=4, seed=5))
    stem = "lora_unet_double_blocks_0_img_attn_qkv" if model.family == "flux" else \
        "lora_unet_joint_blocks_0_x_block_attn_qkv"
    adapter = lora.adapters[stem, "weight"]
    delta = adapter.diff()
    placed = lora_patches(lora, model)
    before = params(model.model)
    half = patched_model(model.with_patches(placed.unet, 0.5))
    rows = torch.split(delta, delta.shape[0] // 3)
    for name, part in zip(("to_q", "to_k", "to_v"), rows, strict=True):
        key = f"transformer_blocks.0.attn.{name}.weight"
        torch.testing.assert_close(half[key] - before[key], 0.5 * part, rtol=1e-4, atol=1e-6)
    assert lora_patches(lora, model).unet[key] is placed.unet[key]  # derived once: unchanged nodes stay applied


def test_loha_on_a_fused_layer_equals_loha_on_the_fused_weight(base: tuple[Path, Any, Path]) -> None:
    _, loaded, _ = base
    model = loaded.model
    weights = dict(model.model.named_parameters())
    names = [f"transformer_blocks.0.attn.{n}.weight" for n in ("to_q", "to_k", "to_v")]
    fused = torch.cat([weights[n].detach() for n in names])
    g = torch.Generator().manual_seed(0)
    rows, cols = fused.shape
    adapter = LohaAdapter(torch.randn(rows, 2, generator=g), torch.randn(2, cols, generator=g),
                          torch.randn(rows, 2, generator=g), torch.randn(2, cols, generator=g), 2.0)
    sizes = tuple(weights[n].shape[0] for n in names)
    shapes = {n: tuple(weights[n].shape) for n in names}
    parts = place(adapter, Target(tuple(names), "cat", sizes), shapes, lambda a, s: True)
    assert parts is not None
    expected = torch.split(adapter.apply(fused.clone(), 0.7), list(sizes))
    for name, want in zip(names, expected, strict=True):
        got = parts[name].apply(weights[name].detach().clone(), 0.7)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_unknown_keys_are_named_and_the_rest_applies(base: tuple[Path, Any, Path],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    ckpt, loaded, root = base
    path = write_lora(root / "extra.safetensors", base=ckpt, kind="lora", rank=4, seed=3)
    tensors = load_file(path)
    tensors["lora_unet_double_blocks_99_img_attn_qkv.lora_down.weight"] = torch.zeros(4, 8)
    tensors["lora_unet_double_blocks_99_img_attn_qkv.lora_up.weight"] = torch.zeros(8, 4)
    save_file(tensors, root / "extra2.safetensors")
    with caplog.at_level(logging.WARNING):
        placed = lora_patches(read_lora(root / "extra2.safetensors"), loaded.model)
    assert "lora_unet_double_blocks_99_img_attn_qkv.weight" in caplog.text
    assert placed.unet and placed.unknown == ["lora_unet_double_blocks_99_img_attn_qkv.weight"]


def test_an_sd15_lora_on_a_transformer_is_a_one_line_error(base: tuple[Path, Any, Path], tmp_path: Path) -> None:
    _, loaded, _ = base
    save_file({f"lora_unet_input_blocks_{i}_1_proj_in.lora_down.weight": torch.zeros(4, 8) for i in range(4)}
              | {f"lora_unet_input_blocks_{i}_1_proj_in.lora_up.weight": torch.zeros(8, 4) for i in range(4)},
              tmp_path / "sd15.safetensors")
    with pytest.raises(LoraError, match="made for another model"):
        lora_patches(read_lora(tmp_path / "sd15.safetensors"), loaded.model)
