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
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left beside it
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any saved file (umask 022)


def test_alpha_becomes_inverted_mask(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 2), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    rgba.save(tmp_path / "m.png")
    _, mask = load_image(tmp_path / "m.png")
    assert mask.shape == (1, 2, 4)
    assert mask[0, 0, 0] == 1.0 and mask[0, 1, 1] == 0.0


class _ListingChunks(list):
    """A chunk list that lists the folder when PIL walks it, which is in the middle of writing the file."""

    def __init__(self, chunks: list, folder: Path, seen: list[list[str]]) -> None:
        super().__init__(chunks)
        self.folder, self.seen = folder, seen

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.seen.append(sorted(p.name for p in self.folder.iterdir()))
        return super().__iter__()


def test_a_png_being_written_is_hidden_from_png_globs(tmp_path: Path) -> None:
    # pathlib's glob matches dot files too, so a ".tmp-x.png" was seen half-written by a client watching the folder
    seen: list[list[str]] = []
    text = png_text({"1": {}}, None)
    text.chunks = _ListingChunks(text.chunks, tmp_path, seen)
    save_png(torch.rand(8, 8, 3), tmp_path / "out_00001_.png", text)
    assert seen, "PIL did not walk the chunks while writing"
    during = seen[0]
    assert len(during) == 1 and during[0].startswith(".") and not during[0].endswith(".png"), during
    assert [p.name for p in tmp_path.glob("*.png")] == ["out_00001_.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_00001_.png"]
