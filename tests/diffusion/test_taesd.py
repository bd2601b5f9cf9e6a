"""TAESD preview decoders (the published key layout, both file formats, bad files) and fitted palettes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import CheckpointError
from diffusion.preview import Palette, fit_palette, latent_to_rgb, preview_tuple
from diffusion.taesd import build_decoder, decoder_stem, load_taesd_decoder, write_taesd_decoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_decoder_has_the_published_keys() -> None:
    keys = build_decoder().state_dict()
    assert len(keys) == 67
    assert keys["1.weight"].shape == (64, 4, 3, 3) and keys["19.weight"].shape == (3, 64, 3, 3)
    assert "3.conv.4.bias" in keys and "18.conv.0.weight" in keys
    assert "7.weight" in keys and "7.bias" not in keys  # the convs after upsampling have no bias
    assert decoder_stem("sd2") == "taesd_decoder" and decoder_stem("sdxl_refiner") == "taesdxl_decoder"


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_written_decoder_loads_and_decodes_at_8x(tmp_path: Path, suffix: str) -> None:
    path = write_taesd_decoder(tmp_path / f"taesd_decoder{suffix}", seed=1)
    again = write_taesd_decoder(tmp_path / f"again{suffix}", seed=1)
    decoder = load_taesd_decoder(path)
    assert torch.equal(decoder[1].weight, load_taesd_decoder(again)[1].weight)  # same seed, same weights
    kind, image, size = preview_tuple(torch.randn(2, 4, 3, 5), "sd1", taesd=decoder)
    assert (kind, image.size, size) == ("JPEG", (40, 24), None)
    assert not list(tmp_path.glob(".*.part"))


def test_bad_decoder_files_are_one_line_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"1.weight": torch.zeros(64, 4, 3, 3)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_taesd_decoder(tmp_path / "partial.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a TAESD decoder"):
        load_taesd_decoder(tmp_path / "other.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError):
        load_taesd_decoder(tmp_path / "cut.safetensors")


def test_make_model_writes_a_taesd_decoder(tmp_path: Path) -> None:
    from nodes.model_tools import make_model

    path = make_model("taesd", tmp_path / "vae_approx" / "taesd_decoder.safetensors", seed=2)
    assert load_taesd_decoder(path)[19].weight.shape == (3, 64, 3, 3)


def test_fit_palette_recovers_a_linear_encoder() -> None:
    """An 'encoder' that is linear in the colours: the palette gives the colours back."""
    mix = torch.tensor([[0.5, 0.1, -0.2], [0.0, 0.7, 0.3], [0.2, -0.4, 0.6], [0.3, 0.3, 0.3]])

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        signed = torch.nn.functional.avg_pool2d(pixels * 2.0 - 1.0, 8)
        return torch.einsum("cr,brhw->bchw", mix, signed) + 0.1

    palette = fit_palette(encode, latent_scale=2.0)
    latent = (torch.einsum("cr,brhw->bchw", mix, torch.tensor([0.8, -0.6, 0.2]).view(1, 3, 1, 1)) + 0.1) * 2.0
    rgb = torch.tensor(list(latent_to_rgb(latent, palette).getpixel((0, 0))), dtype=torch.float32)
    assert torch.allclose(rgb, (torch.tensor([0.8, -0.6, 0.2]) + 1) / 2 * 255, atol=12)
    linear = Palette(palette.weight, palette.bias)  # the least-squares factors fitted beside the lookup
    assert torch.allclose(torch.tensor(list(latent_to_rgb(latent, linear).getpixel((0, 0))), dtype=torch.float32),
                          (torch.tensor([0.8, -0.6, 0.2]) + 1) / 2 * 255, atol=1.5)
    assert Palette.for_family("sd2").weight.shape == (4, 3)


def test_encoder_has_the_published_keys() -> None:
    from diffusion.taesd import build_encoder

    keys = build_encoder().state_dict()
    assert len(keys) == 67
    assert keys["0.weight"].shape == (64, 3, 3, 3) and keys["14.weight"].shape == (4, 64, 3, 3)
    assert "2.weight" in keys and "2.bias" not in keys  # the stride-2 convs have no bias
    assert build_encoder()(torch.zeros(1, 3, 32, 16)).shape == (1, 4, 4, 2)
