"""Latent and image resizing."""

from __future__ import annotations

import pytest
import torch

from diffusion.resize import IMAGE_UPSCALE_METHODS, UPSCALE_METHODS, center_crop_to_aspect, upscale


@pytest.mark.parametrize("method", sorted(set(UPSCALE_METHODS) | set(IMAGE_UPSCALE_METHODS)))
def test_every_method_gives_the_size_asked_for(method: str) -> None:
    samples = torch.rand(2, 3, 8, 12)
    out = upscale(samples, 20, 16, method)
    assert out.shape == (2, 3, 16, 20)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"])
def test_constant_stays_constant(method: str) -> None:
    samples = torch.full((1, 4, 6, 6), 0.25)
    assert torch.allclose(upscale(samples, 12, 9, method), samples.new_full((1, 4, 9, 12), 0.25), atol=1e-5)


def test_center_crop_keeps_the_middle() -> None:
    samples = torch.arange(16.0).view(1, 1, 2, 8)
    cropped = center_crop_to_aspect(samples, 1, 1)
    assert cropped.shape == (1, 1, 2, 2)
    assert cropped[0, 0, 0].tolist() == [3.0, 4.0]
