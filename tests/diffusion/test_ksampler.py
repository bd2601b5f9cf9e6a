"""The KSampler path: noise, sigma windows, latent scaling, masks, callbacks; and latent2rgb previews."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.ksampler import ksample
from diffusion.models import UNetModel
from diffusion.preview import latent_to_rgb, preview_tuple, wants_preview

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def unet(tiny_sd15_path: Path) -> UNetModel:
    model = load_checkpoint(tiny_sd15_path, precision="fp32", parts=("unet",)).unet
    assert model is not None
    return model


def conds(seed: int) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    return ([[torch.randn(1, 77, 64, generator=g), {}]], [[torch.randn(1, 77, 64, generator=g), {}]])


def run(unet: UNetModel, latent: dict, seed: int = 1, steps: int = 3, **kw) -> dict:
    pos, neg = conds(0)
    return ksample(unet, seed, steps, 6.0, kw.pop("sampler", "euler"), "normal", pos, neg, latent, **kw)


def test_same_seed_is_bit_identical_and_output_is_unscaled(unet: UNetModel) -> None:
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    a, b = run(unet, latent, seed=3), run(unet, latent, seed=3)
    assert torch.equal(a["samples"], b["samples"])
    assert not torch.equal(a["samples"], run(unet, latent, seed=4)["samples"])
    assert a["samples"].device.type == "cpu" and a["samples"].dtype == torch.float32
    assert latent["samples"].count_nonzero() == 0  # the input is never modified


def test_ancestral_sampler_is_reproducible(unet: UNetModel) -> None:
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    first = run(unet, latent, seed=9, sampler="euler_ancestral")["samples"]
    assert torch.equal(first, run(unet, latent, seed=9, sampler="euler_ancestral")["samples"])


def test_nothing_to_sample_returns_the_input(unet: UNetModel) -> None:
    samples = torch.randn(1, 4, 8, 8)
    assert run(unet, {"samples": samples}, denoise=0.0)["samples"] is samples
    assert run(unet, {"samples": samples}, start_step=3)["samples"] is samples  # past the last step


def test_batch_index_gives_a_slice_the_noise_it_had_in_the_batch(unet: UNetModel) -> None:
    whole = run(unet, {"samples": torch.zeros(3, 4, 8, 8)})["samples"]
    sliced = run(unet, {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [2]})
    assert sliced["batch_index"] == [2]  # other keys kept
    assert torch.allclose(sliced["samples"][0], whole[2], rtol=1e-5, atol=1e-3)
    assert not torch.allclose(sliced["samples"][0], whole[0], atol=1.0)


def test_noise_mask_keeps_the_unmasked_latent(unet: UNetModel) -> None:
    samples = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 32:] = 1.0  # regenerate the right half only
    out = run(unet, {"samples": samples, "noise_mask": mask})
    assert "noise_mask" in out  # kept, as ComfyUI's latent.copy() keeps it
    assert torch.allclose(out["samples"][..., :4], samples[..., :4], atol=1e-4)
    assert not torch.allclose(out["samples"][..., 4:], samples[..., 4:], atol=1e-2)


def test_callback_counts_the_steps_of_the_window(unet: UNetModel) -> None:
    seen: list[tuple[int, int]] = []
    run(unet, {"samples": torch.zeros(1, 4, 8, 8)}, steps=6, start_step=2, last_step=4,
        callback=lambda i, total, denoised: seen.append((i, total)))
    assert seen == [(0, 2), (1, 2)]
    seen.clear()
    run(unet, {"samples": torch.zeros(1, 4, 8, 8)}, steps=3, callback=lambda i, t, d: seen.append((i, t)))
    assert seen == [(0, 3), (1, 3), (2, 3)]


def test_leftover_noise_then_continue_matches_one_run(unet: UNetModel) -> None:
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    whole = run(unet, latent, steps=4)["samples"]
    first = run(unet, latent, steps=4, last_step=2, force_full_denoise=False)
    rest = run(unet, first, steps=4, start_step=2, add_noise=False, force_full_denoise=True)["samples"]
    assert torch.allclose(rest, whole, rtol=1e-5, atol=1e-3)
    cut = run(unet, latent, steps=4, last_step=2, force_full_denoise=True)["samples"]
    assert not torch.allclose(cut, first["samples"], atol=1e-3)  # forced to sigma 0 at step 2


def test_an_exception_in_the_callback_stops_sampling(unet: UNetModel) -> None:
    calls = []

    def stop(i: int, total: int, denoised: torch.Tensor) -> None:
        calls.append(i)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(unet, {"samples": torch.zeros(1, 4, 8, 8)}, steps=5, callback=stop)
    assert calls == [0]


def test_latent2rgb_uses_comfyui_factors_and_truncates() -> None:
    x0 = torch.zeros(2, 4, 2, 3)
    x0[0, 0] = 1.0  # first channel only: the pixel is that channel's colour
    rgb = latent_to_rgb(x0, "sd1")
    assert rgb.size == (3, 2) and rgb.mode == "RGB"
    expected = tuple(int((v + 1) / 2 * 255) for v in (0.3512, 0.2297, 0.3227))
    assert rgb.getpixel((0, 0)) == expected
    xl = latent_to_rgb(torch.zeros(1, 4, 1, 1), "sdxl")  # zero latent shows the SDXL bias
    assert xl.getpixel((0, 0)) == tuple(int((b + 1) / 2 * 255) for b in (0.1084, -0.0175, -0.0011))
    kind, image, size = preview_tuple(x0, "sdxl_refiner")
    assert kind == "JPEG" and size is None and image.size == (3, 2)


def test_preview_method_values() -> None:
    assert wants_preview(None) and wants_preview("auto") and wants_preview("taesd") and wants_preview("default")
    assert not wants_preview("none")
