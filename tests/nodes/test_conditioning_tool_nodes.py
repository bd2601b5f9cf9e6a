"""Conditioning tool nodes: the entries they write, and how the sampler's denoiser honours them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.denoiser import Denoiser
from diffusion.models import LoadedCheckpoint
from nodes.conditioning_tools import (
    ConditioningAverage,
    ConditioningConcat,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 4, 8, 8)


def _cond(value: float, tokens: int = 3, dim: int = 2, pooled: float | None = None) -> list:
    options = {} if pooled is None else {"pooled_output": torch.full((1, 4), pooled)}
    return [[torch.full((1, tokens, dim), value), options]]


def test_average_mixes_tokens_and_pooled_outputs() -> None:
    to = _cond(1.0, tokens=4, pooled=1.0) + _cond(3.0, tokens=2, pooled=None)
    source = _cond(5.0, tokens=3, pooled=5.0)
    out = ConditioningAverage(to, source, conditioning_to_strength=0.25)
    first = out[0][0][0, :, 0].tolist()
    assert first == [4.0, 4.0, 4.0, 0.25]  # 1*0.25 + 5*0.75, and the source padded with zeros past its 3 tokens
    assert torch.equal(out[0][1]["pooled_output"], torch.full((1, 4), 4.0))
    assert out[1][0][0, :, 0].tolist() == [4.5, 4.5]  # the source cut to 2 tokens
    assert torch.equal(out[1][1]["pooled_output"], torch.full((1, 4), 5.0))  # none of its own: the source's
    assert "pooled_output" not in to[1][1] and torch.equal(to[0][0], torch.full((1, 4, 2), 1.0))  # inputs unchanged


def test_concat_appends_the_first_source_entry() -> None:
    out = ConditioningConcat(_cond(1.0, tokens=2) + _cond(2.0, tokens=1), _cond(7.0, tokens=3) + _cond(9.0))
    assert [e[0].shape[1] for e in out] == [5, 4]
    assert out[0][0][0, :, 0].tolist() == [1.0, 1.0, 7.0, 7.0, 7.0]
    with pytest.raises(ValueError, match="width 2 and 3"):
        ConditioningConcat(_cond(1.0), _cond(1.0, dim=3))


def test_mask_area_and_strength_entries() -> None:
    mask = torch.ones(8, 8)
    masked = ConditioningSetMask(_cond(1.0), mask, strength=0.5, set_cond_area="mask bounds")[0][1]
    assert masked["mask"].shape == (1, 8, 8) and masked["mask_strength"] == 0.5 and masked["set_area_to_bounds"]
    assert not ConditioningSetMask(_cond(1.0), mask, 1.0, "default")[0][1]["set_area_to_bounds"]
    area = ConditioningSetAreaPercentage(_cond(1.0), width=0.5, height=0.25, x=0.5, y=0.0, strength=2.0)[0][1]
    assert area == {"area": ("percentage", 0.25, 0.5, 0.0, 0.5), "strength": 2.0, "set_area_to_bounds": False}
    assert ConditioningSetAreaStrength(_cond(1.0), strength=0.3)[0][1] == {"strength": 0.3}


# -- honoured by the denoiser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd15(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


def _text(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 64, generator=g), {"pooled_output": torch.zeros(1, 64)}]]


def _denoise(ckpt: LoadedCheckpoint, positive: list) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x, sigma = torch.randn(SHAPE, generator=g) * 3.0, torch.tensor([3.0])
    return Denoiser(ckpt.unet, positive, _text(99), 1.0, SHAPE)(x, sigma)


def test_a_masked_entry_is_weighted_per_pixel(sd15: LoadedCheckpoint) -> None:
    a, b = _text(1), _text(2)
    alone_a, alone_b = _denoise(sd15, a), _denoise(sd15, b)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0  # the left half, at pixel size: resized to the latent by the denoiser
    both = _denoise(sd15, a + ConditioningSetMask(b, mask, strength=3.0, set_cond_area="default"))
    assert torch.allclose(both[..., 4:], alone_a[..., 4:], atol=1e-5)
    assert torch.allclose(both[..., :4], (alone_a[..., :4] + 3.0 * alone_b[..., :4]) / 4.0, atol=1e-5)


def test_mask_bounds_and_percentage_areas_run_on_their_box_only(sd15: LoadedCheckpoint) -> None:
    a, b = _text(1), _text(2)
    alone_a = _denoise(sd15, a)
    mask = torch.zeros(1, 8, 8)
    mask[:, 0:8, 0:2] = 1.0
    bounded = _denoise(sd15, a + ConditioningSetMask(b, mask, 1.0, "mask bounds"))
    assert torch.allclose(bounded[..., 2:], alone_a[..., 2:], atol=1e-5)  # the box is the 8x8 minimum at x 0
    assert not torch.allclose(bounded[..., :2], alone_a[..., :2], atol=1e-3)
    right = ConditioningSetAreaPercentage(b, width=0.5, height=1.0, x=0.5, y=0.0, strength=1.0)
    area = _denoise(sd15, a + right)
    assert torch.allclose(area[..., :4], alone_a[..., :4], atol=1e-5)
    weak = _denoise(sd15, a + ConditioningSetAreaStrength(right, strength=0.0))
    assert torch.allclose(weak, alone_a, atol=1e-5)  # strength 0: the entry counts for nothing
