"""IMAGE tensors to PNG files with ComfyUI's text chunks, and back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from diffusion.images import load_image, png_text, save_png


def test_png_round_trip_with_text_chunks(tmp_path: Path) -> None:
    image = torch.rand(8, 12, 3)
    prompt = {"1": {"class_type": "X", "inputs": {"é": 1}}}
    path = tmp_path / "a.png"
    save_png(image, path, png_text(prompt, {"workflow": {"nodes": []}}))
    with Image.open(path) as png:
        assert list(png.text) == ["prompt", "workflow"]
        assert json.loads(png.text["prompt"]) == prompt
        assert png.size == (12, 8)
    loaded, mask = load_image(path)
    assert loaded.shape == (1, 8, 12, 3)
    # 8-bit truncation: every value within one step of the original
    assert torch.all((loaded[0] - image).abs() <= 1 / 255 + 1e-6)
    assert mask.shape == (1, 64, 64) and mask.sum() == 0
    assert not list(tmp_path.glob(".tmp-*"))
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any saved file (umask 022)


def test_alpha_becomes_inverted_mask(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 2), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    rgba.save(tmp_path / "m.png")
    _, mask = load_image(tmp_path / "m.png")
    assert mask.shape == (1, 2, 4)
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == 0.0
