"""Upscale models: the three ESRGAN-family layouts read by their keys, 4x output, tiling, OOM fallback, bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffusion.upscale import (
    UpscaleModelError,
    load_upscale_model,
    model_from_state,
    tile_count,
    upscale_image,
)
from diffusion.upscale.rrdb import from_new_layout
from diffusion.upscale.synthetic import random_state, write_upscale_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[2]


def _image(h: int = 64, w: int = 64) -> torch.Tensor:
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("arch", "name", "first_key"), [
    ("esrgan", "ESRGAN", "model.0.weight"),
    ("esrgan-new", "RealESRGAN", "conv_first.weight"),
    ("compact", "RealESRGAN-compact", "body.0.weight"),
])
def test_each_layout_is_detected_and_upscales_4x(arch: str, name: str, first_key: str, tmp_path: Path) -> None:
    path = write_upscale_model(tmp_path / f"{arch}.pth", seed=3, arch=arch)
    assert first_key in random_state(arch, seed=3)
    model = load_upscale_model(path)
    assert (model.arch, model.scale) == (name, 4.0)
    out = upscale_image(model, _image(20, 28), model.scale)
    assert out.shape == (1, 80, 112, 3) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0.001  # a pattern, not one clamped value


def test_old_and_new_rrdb_layouts_are_the_same_network() -> None:
    old = random_state("esrgan", seed=5)
    new = random_state("esrgan-new", seed=5)
    assert from_new_layout(new).keys() == old.keys()
    image = _image(16, 16)
    a, b = model_from_state(old), model_from_state(new)
    assert torch.equal(upscale_image(a, image, 4.0), upscale_image(b, image, 4.0))


@pytest.mark.parametrize("arch", ["esrgan", "compact"])
def test_tiled_equals_untiled_away_from_the_seams(arch: str) -> None:
    model = model_from_state(random_state(arch, seed=1))
    image = _image(64, 64)
    whole = upscale_image(model, image, 4.0)
    tiled = upscale_image(model, image, 4.0, tile=48, overlap=16)
    assert tile_count(64, 64, 48, 16) == 4
    # Tiles start at 0 and 32: output rows/columns below 4 * 32 come from the first tile alone, and
    # those below ~100 lie beyond the reach of its cut edge at 48.
    assert (tiled - whole)[:, :96, :96].abs().max() <= 1e-4
    assert (tiled - whole).abs().max() < 0.05  # the seams are blended, not broken


def test_tiles_shrink_when_memory_runs_short() -> None:
    model = model_from_state(random_state("compact", seed=1))
    sizes: list[int] = []

    def picky(part: torch.Tensor) -> torch.Tensor:
        sizes.append(part.shape[-1])
        if part.shape[-1] > 128:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(part)

    image = _image(200, 200)
    out = upscale_image(picky, image, 4.0, progress=lambda done, total: None)
    assert max(sizes) == 200 and sizes[-1] <= 128  # 512 (whole image), 256 (whole image), then 128 tiles
    assert out.shape == (1, 800, 800, 3)

    def hopeless(part: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        upscale_image(hopeless, image, 4.0)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for suffix in (".pth", ".safetensors"):
        a = write_upscale_model(tmp_path / f"a{suffix}", seed=2, arch="esrgan-new")
        b = write_upscale_model(tmp_path / f"b{suffix}", seed=2, arch="esrgan-new")
        assert a.read_bytes() == b.read_bytes()
    assert load_upscale_model(tmp_path / "a.safetensors").arch == "RealESRGAN"


def test_bad_files_give_one_line_reasons(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model")
    with pytest.raises(UpscaleModelError, match=r"junk\.pth is not a readable model file"):
        load_upscale_model(junk)
    other = tmp_path / "other.pth"
    torch.save({"layers.0.weight": torch.zeros(3, 3)}, str(other))
    with pytest.raises(UpscaleModelError, match="not an ESRGAN") as info:
        load_upscale_model(other)
    assert "\n" not in str(info.value)
    broken = random_state("esrgan", seed=0)
    broken["model.0.weight"] = torch.zeros(8, 3, 5, 5)
    with pytest.raises(UpscaleModelError, match="does not load"):
        model_from_state(broken)


def test_make_model_command_writes_an_upscaler(tmp_path: Path) -> None:
    out = tmp_path / "x4.pth"
    done = subprocess.run([sys.executable, "-m", "server.cli", "make-model", "--kind", "upscale", "--arch", "compact",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert load_upscale_model(out).arch == "RealESRGAN-compact"


@pytest.mark.parametrize(("upsamplings", "unshuffle", "scale"), [(0, 1, 1), (1, 1, 2), (3, 1, 8), (2, 2, 2), (2, 4, 1)])
def test_rrdb_scales_are_read_from_the_shapes(upsamplings: int, unshuffle: int, scale: int) -> None:
    from diffusion.upscale.rrdb import RRDBConfig, RRDBNet, to_new_layout

    config = RRDBConfig(features=4, growth=2, blocks=1, upsamplings=upsamplings, unshuffle=unshuffle)
    state = RRDBNet(config).state_dict()
    for layout in (state, to_new_layout(state, config)):  # ESRGAN's keys, and Real-ESRGAN x2plus / x1's
        model = model_from_state(layout)
        assert model.scale == scale
        assert upscale_image(model, _image(8, 12), model.scale).shape == (1, 8 * scale, 12 * scale, 3)


def test_the_node_refuses_an_image_with_other_channels() -> None:
    from nodes.upscale import ImageUpscaleWithModel

    model = model_from_state(random_state("compact", seed=1))
    with pytest.raises(ValueError, match="the image has 4 channels; this RealESRGAN-compact upscaler takes 3"):
        ImageUpscaleWithModel(model, torch.rand(1, 8, 8, 4), ctx=None)
