"""The UNet wrapper: eps/v conversion, CFG batching, areas, SDXL ADM and inpainting channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.denoiser import BLANK_INPAINT_LATENT, Denoiser
from diffusion.models import LoadedCheckpoint
from diffusion.sampling import cfg_combine
from diffusion.synthetic import write_checkpoint

SHAPE = (1, 4, 8, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedCheckpoint]:
    root: Path = tmp_path_factory.mktemp("denoiser")
    out = {}
    for arch in ("sd15", "sd2-v", "sdxl", "sdxl-refiner", "sd15-inpaint"):
        path = write_checkpoint(root / f"{arch}.safetensors", arch, "tiny", 2, torch.float32)
        out[arch] = load_checkpoint(path, precision="fp32")
    return out


def cond(dim: int, tokens: int = 77, seed: int = 0, **options) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, dim, generator=g), {"pooled_output": torch.randn(1, 64, generator=g), **options}]]


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g) * 3.0, torch.tensor([3.0])


def unet_out(ckpt: LoadedCheckpoint, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    unet = ckpt.unet
    t = unet.schedule.timestep(sigma).float()
    with torch.no_grad():
        return unet.model(x / (sigma**2 + 1) ** 0.5, t, encoder_hidden_states=context, return_dict=False)[0]


def test_eps_model_denoised_is_x_minus_eps_sigma(models: dict) -> None:
    ckpt = models["sd15"]
    pos = cond(64)
    x, sigma = inputs()
    d = Denoiser(ckpt.unet, pos, cond(64, seed=9), 1.0, SHAPE)
    eps = unet_out(ckpt, x, sigma, pos[0][0])
    # The UNet's timestep: the table entry nearest to sigma in log space, computed here in numpy.
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    table = ((1 - np.cumprod(1 - betas)) / np.cumprod(1 - betas)) ** 0.5
    assert int(ckpt.unet.schedule.timestep(sigma)) == int(np.abs(np.log(table) - np.log(3.0)).argmin()) == 673
    assert torch.allclose(d(x, sigma), x - eps * 3.0, atol=1e-6)
    assert d.calls == 1  # cfg 1: the negative prompt is never run


def test_v_model_denoised_uses_v_formula(models: dict) -> None:
    ckpt = models["sd2-v"]
    assert ckpt.unet.prediction == "v"
    pos = cond(ckpt.unet.context_dim)
    x, sigma = inputs()
    v = unet_out(ckpt, x, sigma, pos[0][0])
    expected = x / 10.0 - v * 3.0 / 10.0**0.5
    assert torch.allclose(Denoiser(ckpt.unet, pos, pos, 1.0, SHAPE)(x, sigma), expected, atol=1e-6)


def test_cfg_batches_both_sides_in_one_call_and_combines_them(models: dict) -> None:
    unet = models["sd15"].unet
    pos, neg = cond(64, seed=1), cond(64, seed=2)
    x, sigma = inputs()
    both = Denoiser(unet, pos, neg, 7.5, SHAPE)
    out = both(x, sigma)
    assert both.calls == 1
    c = Denoiser(unet, pos, neg, 1.0, SHAPE)(x, sigma)
    u = Denoiser(unet, neg, pos, 1.0, SHAPE)(x, sigma)
    # Batched and single UNet calls differ in the last bits; cfg 7.5 magnifies that to ~1e-4.
    assert torch.allclose(out, cfg_combine(c, u, 7.5), atol=5e-4)


def test_token_lengths_repeat_to_a_common_multiple_up_to_four_times(models: dict) -> None:
    unet = models["sd15"].unet
    x, sigma = inputs()
    long = cond(64, tokens=154, seed=3)
    mixed = Denoiser(unet, long, cond(64, seed=4), 3.0, SHAPE)
    out = mixed(x, sigma)
    assert mixed.calls == 1  # 77 and 154 tokens: one call, the short cond repeated twice
    c = Denoiser(unet, long, long, 1.0, SHAPE)(x, sigma)
    u = Denoiser(unet, cond(64, seed=4), long, 1.0, SHAPE)(x, sigma)
    assert torch.allclose(out, cfg_combine(c, u, 3.0), atol=5e-4)

    apart = Denoiser(unet, cond(64, tokens=77 * 5, seed=3), cond(64, seed=4), 3.0, SHAPE)
    apart(x, sigma)
    assert apart.calls == 2  # a ratio of 5 is not batched


def test_area_entry_only_changes_its_region(models: dict) -> None:
    unet = models["sd15"].unet
    x, sigma = inputs()
    full = cond(64, seed=5)
    plain = Denoiser(unet, full, full, 1.0, SHAPE)(x, sigma)
    boxed = cond(64, seed=6, area=(4, 4, 4, 4), strength=1.0)  # lower-right quarter, latent units
    mixed = Denoiser(unet, full + boxed, full, 1.0, SHAPE)(x, sigma)
    assert torch.equal(mixed[:, :, :4, :], plain[:, :, :4, :])
    assert torch.equal(mixed[:, :, :, :4], plain[:, :, :, :4])
    assert not torch.allclose(mixed[:, :, 4:, 4:], plain[:, :, 4:, 4:])
    # The area's twin on the negative side keeps the negative averaged over the same region.
    assert len(Denoiser(unet, full + boxed, full, 2.0, SHAPE).sides[1]) == 2


def test_masked_entry_only_changes_where_its_mask_is_set(models: dict) -> None:
    unet = models["sd15"].unet
    x, sigma = inputs()
    full = cond(64, seed=5)
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1.0  # image-size mask: resized to the latent
    masked = cond(64, seed=6, mask=mask, mask_strength=1.0, set_area_to_bounds=False)
    out = Denoiser(unet, full + masked, full, 1.0, SHAPE)(x, sigma)
    plain = Denoiser(unet, full, full, 1.0, SHAPE)(x, sigma)
    # Mask 0 there (both entries ran as one batch of 2, hence last-bit differences only).
    assert torch.allclose(out[:, :, 4:], plain[:, :, 4:], atol=1e-5)
    assert not torch.allclose(out[:, :, :4], plain[:, :, :4])


def test_sdxl_size_conditioning_defaults_to_the_latent_size(models: dict) -> None:
    unet = models["sdxl"].unet
    x, sigma = inputs()
    implicit = Denoiser(unet, cond(128, seed=7), cond(128, seed=7), 1.0, SHAPE)
    assert implicit.sides[0][0].extra["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]]
    sizes = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64}
    explicit = Denoiser(unet, cond(128, seed=7, **sizes), cond(128, seed=7), 1.0, SHAPE)
    assert torch.equal(implicit(x, sigma), explicit(x, sigma))
    other = Denoiser(unet, cond(128, seed=7, **{**sizes, "width": 1024}), cond(128, seed=7), 1.0, SHAPE)
    assert not torch.allclose(other(x, sigma), explicit(x, sigma))


def test_refiner_aesthetic_score_defaults_per_side(models: dict) -> None:
    unet = models["sdxl-refiner"].unet
    d = Denoiser(unet, cond(64), cond(64), 4.0, SHAPE)
    assert d.sides[0][0].extra["time_ids"].tolist() == [[64, 64, 0, 0, 6.0]]
    assert d.sides[1][0].extra["time_ids"].tolist() == [[64, 64, 0, 0, 2.5]]
    x, sigma = inputs()
    assert d(x, sigma).shape == SHAPE


def test_inpaint_channels(models: dict) -> None:
    unet = models["sd15-inpaint"].unet
    assert unet.inpaint
    blank = Denoiser(unet, cond(64), cond(64), 1.0, SHAPE).sides[0][0].concat
    assert blank[:, 0].unique().tolist() == [1.0]
    assert torch.allclose(blank[0, 1:, 0, 0], torch.tensor(BLANK_INPAINT_LATENT))

    latent = torch.randn(SHAPE)
    mask = torch.zeros(SHAPE)
    mask[:, :, :, :4] = 0.7  # rounded to 1 for the model's mask channel
    d = Denoiser(unet, cond(64), cond(64), 1.0, SHAPE, latent_image=latent, denoise_mask=mask)
    concat = d.sides[0][0].concat
    assert concat[:, 0, :, :4].unique().tolist() == [1.0] and concat[:, 0, :, 4:].unique().tolist() == [0.0]
    assert torch.equal(concat[:, 1:], latent)
    x, sigma = inputs()
    assert d(x, sigma).shape == SHAPE
