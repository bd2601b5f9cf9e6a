"""Latent nodes: shapes, resizing rules, batch_index and noise_mask bookkeeping, and their ComfyUI specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.api import Services
from nodes.folders import Folders
from nodes.latent import (
    EmptyLatentImage,
    LatentFromBatch,
    LatentUpscale,
    LatentUpscaleBy,
    RepeatLatentBatch,
    SetLatentNoiseMask,
)
from nodes.object_info import node_info
from nodes.registry import NodeRegistry, build_registry


@pytest.fixture
def registry(tmp_path: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path)))


def _latent(batch: int, h: int = 8, w: int = 8) -> dict:
    return {"samples": torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 4, h, w).clone()}


def test_empty_latent_image_spec_matches_comfyui(registry: NodeRegistry) -> None:
    info = node_info(registry["EmptyLatentImage"])
    assert info["input"]["required"] == {
        "width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8,
                          "tooltip": "The width of the latent images in pixels."}],
        "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8,
                           "tooltip": "The height of the latent images in pixels."}],
        "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096,
                               "tooltip": "The number of latent images in the batch."}],
    }
    assert info["output"] == ["LATENT"] and info["category"] == "latent"
    assert info["display_name"] == "Empty Latent Image"
    assert info["output_tooltips"] == ["The empty latent image batch."]


def test_latent_specs_match_comfyui(registry: NodeRegistry) -> None:
    upscale = node_info(registry["LatentUpscale"])["input"]["required"]
    assert upscale == {
        "samples": ["LATENT"],
        "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]],
        "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 8}],
        "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 8}],
        "crop": [["disabled", "center"]],
    }
    by = node_info(registry["LatentUpscaleBy"])["input"]["required"]
    assert by["scale_by"] == ["FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}]
    batch = node_info(registry["LatentFromBatch"])
    assert batch["input"]["required"]["batch_index"] == ["INT", {"default": 0, "min": 0, "max": 63}]
    assert batch["input"]["required"]["length"] == ["INT", {"default": 1, "min": 1, "max": 64}]
    assert batch["category"] == "latent/batch" and batch["display_name"] == "Latent From Batch"
    repeat = node_info(registry["RepeatLatentBatch"])
    assert repeat["input"]["required"]["amount"] == ["INT", {"default": 1, "min": 1, "max": 64}]
    mask = node_info(registry["SetLatentNoiseMask"])
    assert mask["input_order"]["required"] == ["samples", "mask"] and mask["category"] == "latent/inpaint"


def test_empty_latent_is_zeros_on_cpu() -> None:
    latent = EmptyLatentImage(width=520, height=384, batch_size=3)
    assert latent["samples"].shape == (3, 4, 48, 65)
    assert latent["samples"].device.type == "cpu" and not latent["samples"].any()
    assert set(latent) == {"samples"}


def test_latent_upscale_sizes_and_aspect() -> None:
    latent = {"samples": torch.randn(1, 4, 64, 96), "batch_index": [3]}
    out = LatentUpscale(latent, "nearest-exact", 1024, 768, "disabled")
    assert out["samples"].shape == (1, 4, 96, 128) and out["batch_index"] == [3]
    assert latent["samples"].shape == (1, 4, 64, 96)  # the input is left alone
    keep_aspect = LatentUpscale(latent, "bilinear", 0, 1024, "disabled")
    assert keep_aspect["samples"].shape == (1, 4, 128, 192)
    assert LatentUpscale(latent, "bilinear", 0, 0, "disabled") is latent
    tiny = LatentUpscale(latent, "area", 16, 16, "center")  # each side at least 64 px
    assert tiny["samples"].shape == (1, 4, 8, 8)
    by = LatentUpscaleBy(latent, "bislerp", 1.5)
    assert by["samples"].shape == (1, 4, 96, 144)


def test_latent_from_batch_slices_indices_and_masks() -> None:
    latent = _latent(4)
    out = LatentFromBatch(latent, batch_index=1, length=2)
    assert out["samples"][:, 0, 0, 0].tolist() == [1.0, 2.0] and out["batch_index"] == [1, 2]
    clamped = LatentFromBatch(latent, batch_index=10, length=5)
    assert clamped["samples"][:, 0, 0, 0].tolist() == [3.0] and clamped["batch_index"] == [3]
    again = LatentFromBatch({**latent, "batch_index": [10, 11, 12, 13]}, batch_index=2, length=2)
    assert again["batch_index"] == [12, 13]

    one_mask = LatentFromBatch({**latent, "noise_mask": torch.ones(1, 1, 8, 8)}, batch_index=2, length=1)
    assert one_mask["noise_mask"].shape == (1, 1, 8, 8)
    masks = torch.arange(2, dtype=torch.float32).view(2, 1, 1, 1).expand(2, 1, 8, 8)
    cycled = LatentFromBatch({**latent, "noise_mask": masks}, batch_index=1, length=3)
    assert cycled["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0]  # masks repeat to cover the batch


def test_repeat_latent_batch_offsets_batch_index() -> None:
    latent = _latent(2)
    plain = RepeatLatentBatch(latent, amount=3)
    assert plain["samples"][:, 0, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert "batch_index" not in plain
    indexed = RepeatLatentBatch({**latent, "batch_index": [4, 5]}, amount=3)
    assert indexed["batch_index"] == [4, 5, 6, 7, 8, 9]
    masked = RepeatLatentBatch({**latent, "noise_mask": torch.rand(2, 1, 8, 8)}, amount=2)
    assert masked["noise_mask"].shape == (4, 1, 8, 8)
    shared = torch.rand(1, 1, 8, 8)
    assert RepeatLatentBatch({**latent, "noise_mask": shared}, amount=2)["noise_mask"] is shared


def test_set_latent_noise_mask_reshapes() -> None:
    latent = _latent(2)
    out = SetLatentNoiseMask(latent, torch.ones(2, 64, 64))
    assert out["noise_mask"].shape == (2, 1, 64, 64) and "noise_mask" not in latent
    assert SetLatentNoiseMask(latent, torch.ones(64, 64))["noise_mask"].shape == (1, 1, 64, 64)
