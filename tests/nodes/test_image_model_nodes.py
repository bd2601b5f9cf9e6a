"""SD_4XUpscale_Conditioning: the low-resolution image and its noise level on both sides, a quarter-size latent."""

from __future__ import annotations

import pytest
import torch

from nodes.image_models import SD_4XUpscale_Conditioning


def _cond() -> list:
    return [[torch.zeros(1, 77, 64), {"strength": 0.5}], [torch.ones(1, 77, 64), {}]]


def test_sizes_follow_the_scale_ratio_over_four() -> None:
    images = torch.rand(2, 30, 20, 3)
    positive, negative, latent = SD_4XUpscale_Conditioning.func(images, _cond(), _cond(), 4.0, 0.25)
    assert latent["samples"].shape == (2, 4, 30, 20) and not latent["samples"].any()  # 120x80 out, /4
    for side in (positive, negative):
        assert len(side) == 2 and side[0][1]["strength"] == 0.5
        for _, options in side:
            assert options["concat_image"].shape == (2, 3, 30, 20) and options["noise_augmentation"] == 0.25
    # At ratio 4 the quarter-size image is the input itself, in [-1, 1].
    assert torch.allclose(positive[0][1]["concat_image"], images.movedim(-1, 1) * 2 - 1, atol=1e-6)
    _, _, half = SD_4XUpscale_Conditioning.func(images, _cond(), _cond(), 2.0, 0.0)
    assert half["samples"].shape == (2, 4, 15, 10)


def test_the_input_conditioning_is_not_changed() -> None:
    cond = _cond()
    SD_4XUpscale_Conditioning.func(torch.rand(1, 8, 8, 3), cond, cond, 4.0, 0.0)
    assert all("concat_image" not in options for _, options in cond)


@pytest.mark.parametrize(("images", "ratio", "reason"), [
    (torch.rand(8, 8, 3), 4.0, r"images must be an IMAGE batch"),
    (torch.rand(1, 8, 8, 3), 0.1, r"a scale_ratio of 0\.1 makes the 8x8 image smaller than 4 pixels"),
])
def test_bad_input_is_one_line_at_the_node(images: torch.Tensor, ratio: float, reason: str) -> None:
    with pytest.raises(ValueError, match="SD_4XUpscale_Conditioning: " + reason):
        SD_4XUpscale_Conditioning.func(images, _cond(), _cond(), ratio, 0.0)
