"""Synthetic test checkpoints: deterministic, in the original layout, sized as promised."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffusion.models import parameter_count
from diffusion.synthetic import ORIGIN, build_models, synthetic_spec, write_checkpoint


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    a = write_checkpoint(tmp_path / "a.safetensors", "sdxl", "tiny", seed=11)
    b = write_checkpoint(tmp_path / "b.safetensors", "sdxl", "tiny", seed=11)
    c = write_checkpoint(tmp_path / "c.safetensors", "sdxl", "tiny", seed=12)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_file_uses_the_original_layout_and_names_its_origin(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "sd2.safetensors", "sd2-v", "tiny", seed=0)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        metadata = f.metadata()
        dtype = f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").dtype
    assert metadata["noodlebox.origin"] == ORIGIN
    assert metadata["modelspec.prediction_type"] == "v"
    assert dtype == torch.float16
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "cond_stage_model.model.text_projection" in keys
    assert not any(k.startswith(("down_blocks", "unet.", "text_model.")) for k in keys)


def test_sdxl_layout_has_both_encoders(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "xl.safetensors", "sdxl", "tiny", seed=0)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight" in keys
    assert "model.diffusion_model.label_emb.0.0.weight" in keys


def test_weights_are_small_and_finite(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "s.safetensors", "sd15", "tiny", seed=5, dtype=torch.float32)
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open handles are not iterable)
            tensor = f.get_tensor(key)
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), key
                assert tensor.abs().max() < 2.0, key


@pytest.mark.parametrize(
    ("name", "size", "total"),
    [
        ("sd15", "full", 1_066_235_307),  # 859.5 M UNet + 83.7 M VAE + 123.1 M CLIP-L
        ("sd15", "small", 314_145_387),  # 107.4 M UNet + real VAE and CLIP-L: ~630 MB in fp16
    ],
)
def test_parameter_counts(name: str, size: str, total: int) -> None:
    """Counted on meta-device models: nothing is generated."""
    models = build_models(synthetic_spec(name, size))
    assert sum(parameter_count(m) for m in models.values()) == total


def test_small_sd15_keeps_what_comfyui_recognises() -> None:
    spec = synthetic_spec("sd15", "small")
    assert spec.unet["block_out_channels"][0] == 320
    assert spec.unet["cross_attention_dim"] == 768
    assert spec.unet["use_linear_projection"] is False
    assert spec.vae["block_out_channels"] == [128, 256, 512, 512]
    assert spec.text["clip_l"]["hidden_size"] == 768 and spec.text["clip_l"]["num_hidden_layers"] == 12


def test_unknown_arch_or_size_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        synthetic_spec("sd3")
    with pytest.raises(ValueError, match="unknown size"):
        synthetic_spec("sd15", "huge")
