"""InpaintModelConditioning: the grey-masked image latent and the mask on both conditionings, bad masks refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.control.inpaint import inpaint_model_inputs
from nodes.model_kinds import InpaintModelConditioning

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(vae, pixels, mask, noise_mask=True):
    cond = [[torch.zeros(1, 77, 64), {}]]
    return InpaintModelConditioning.func(cond, cond, vae, pixels, mask, noise_mask)


def test_masked_pixels_become_grey_and_sizes_are_cropped_to_eight() -> None:
    pixels = torch.rand(1, 21, 19, 3)
    mask = torch.zeros(1, 21, 19)
    mask[:, :10] = 1.0
    grey, resized = inpaint_model_inputs(pixels, mask)
    assert grey.shape == (1, 16, 16, 3) and resized.shape == (1, 1, 16, 16)
    y, x = (21 % 8) // 2, (19 % 8) // 2
    assert torch.all(grey[:, :8] == 0.5)  # rows 2..9 of the original: masked
    assert torch.allclose(grey[:, 10:], pixels[:, y + 10:y + 16, x:x + 16])


def test_node_sets_both_sides_and_the_noise_mask(tiny_sd15_path: Path) -> None:
    vae = load_checkpoint(tiny_sd15_path, precision="fp32", parts=("vae",)).vae
    pixels, mask = torch.rand(1, 32, 32, 3), torch.zeros(32, 32)
    mask[8:24, 8:24] = 1.0
    positive, negative, latent = run(vae, pixels, mask)
    for side in (positive, negative):
        options = side[0][1]
        assert options["concat_latent_image"].shape == (1, 4, 4, 4) and options["concat_mask"].shape == (1, 1, 32, 32)
    assert latent["samples"].shape == (1, 4, 4, 4) and torch.equal(latent["noise_mask"], positive[0][1]["concat_mask"])
    assert "noise_mask" not in run(vae, pixels, mask, noise_mask=False)[2]


@pytest.mark.parametrize(("mask", "reason"), [
    (torch.zeros(1, 1, 1, 32, 32), r"the mask must be \[H, W\] or \[B, H, W\]"),
    (torch.zeros(3, 32, 32), "the mask has a batch of 3 but the image has 2"),
])
def test_masks_of_another_shape_are_refused(tiny_sd15_path: Path, mask: torch.Tensor, reason: str) -> None:
    vae = load_checkpoint(tiny_sd15_path, precision="fp32", parts=("vae",)).vae
    with pytest.raises(ValueError, match="InpaintModelConditioning: " + reason):
        run(vae, torch.rand(2, 32, 32, 3), mask)


def test_instruct_pix2pix_model_reads_the_source_image(tmp_path: Path) -> None:
    from diffusion.denoiser import Denoiser
    from diffusion.ksampler import ksample
    from diffusion.synthetic import write_checkpoint
    from nodes.model_kinds import InstructPixToPixConditioning

    ckpt = load_checkpoint(write_checkpoint(tmp_path / "ip2p.safetensors", "sd15-ip2p", "tiny", 1, torch.float32),
                           precision="fp32")
    assert ckpt.unet.in_channels == 8
    cond = [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(0)), {}]]
    images = [torch.full((1, 36, 34, 3), v) for v in (0.1, 0.9)]
    results = []
    for image in images:
        positive, negative, latent = InstructPixToPixConditioning.func(cond, cond, ckpt.vae, image)
        assert latent["samples"].shape == (1, 4, 4, 4) and not latent["samples"].any()
        assert positive[0][1]["concat_latent_image"] is negative[0][1]["concat_latent_image"]
        results.append(ksample(ckpt.unet, 3, 2, 3.0, "euler", "normal", positive, negative, latent)["samples"])
    assert not torch.allclose(results[0], results[1], atol=1e-4)  # the source image steers the model
    plain = Denoiser(ckpt.unet, cond, cond, 3.0, (1, 4, 4, 4))
    assert torch.equal(plain.sides[0][0].concat, torch.zeros(1, 4, 4, 4))  # no image: zeros, as ComfyUI
