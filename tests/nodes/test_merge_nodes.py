"""Model and CLIP merging: the merged weights are ComfyUI's closed forms, and nothing is copied until use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.convert import unet_ldm_names
from diffusion.models import LoadedCheckpoint
from diffusion.patching import DiffAdapter
from nodes import merge

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(path: Path) -> LoadedCheckpoint:
    return load_checkpoint(path, precision="fp32", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def two(tiny_sd15_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedCheckpoint, LoadedCheckpoint]:
    from diffusion.synthetic import write_checkpoint

    other = write_checkpoint(tmp_path_factory.mktemp("other") / "b.safetensors", "sd15", "tiny", 11, torch.float32)
    return _load(tiny_sd15_path), _load(other)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_simple_add_and_subtract_are_the_closed_forms(two) -> None:
    a, b = two
    w1, w2 = _weights(a.unet.model), _weights(b.unet.model)
    cases = [
        (merge.ModelMergeSimple(a.unet, b.unet, 0.3), lambda k: 0.3 * w1[k] + 0.7 * w2[k]),
        (merge.ModelMergeAdd(a.unet, b.unet), lambda k: w1[k] + w2[k]),
        (merge.ModelMergeSubtract(a.unet, b.unet, 2.0), lambda k: 2.0 * (w1[k] - w2[k])),
    ]
    for merged, expected in cases:
        assert merged.model is a.unet.model  # no copy of the UNet
        with merged.use() as module:
            for key, value in module.named_parameters():
                torch.testing.assert_close(value, expected(key), rtol=1e-6, atol=1e-6)
    with a.unet.use() as module:  # the unmerged model is untouched
        assert all(torch.equal(v, w1[k]) for k, v in module.named_parameters())


def test_block_merge_picks_the_longest_prefix(two) -> None:
    a, b = two
    w1, w2 = _weights(a.unet.model), _weights(b.unet.model)
    names = unet_ldm_names(w1, a.unet.model.config)
    ratios = {block: 1.0 for block in merge._SD_BLOCKS}
    ratios["input_blocks.1."] = 0.0  # all of model2 there
    merged = merge.ModelMergeSD1(a.unet, b.unet, **ratios)
    with merged.use() as module:
        for key, value in module.named_parameters():
            want = w2[key] if names[key].startswith("input_blocks.1.") else w1[key]
            assert torch.equal(value, want), key
    blocks = merge.ModelMergeBlocks(a.unet, b.unet, input=1.0, middle=0.0, out=1.0)
    with blocks.use() as module:
        for key, value in module.named_parameters():
            want = w2[key] if names[key].startswith("middle") else w1[key]
            assert torch.equal(value, want), key


def test_merging_a_patched_model_merges_its_patched_weights(two) -> None:
    a, _ = two
    w = _weights(a.unet.model)
    key = next(iter(w))
    shifted = a.unet.with_patches({key: DiffAdapter(torch.ones_like(w[key]))})
    merged = merge.ModelMergeSimple(a.unet, shifted, 0.5)  # same base module on both sides
    with merged.use() as module:
        torch.testing.assert_close(dict(module.named_parameters())[key], w[key] + 0.5)


def test_clip_merge(two) -> None:
    a, b = two
    l1, l2 = _weights(a.clip.clip_l), _weights(b.clip.clip_l)
    merged = merge.CLIPMergeSimple(a.clip, b.clip, 0.25)
    key = next(k for k in l1 if k.endswith("q_proj.weight"))
    assert merged.clip_l is a.clip.clip_l
    entries = merged.weight_patches[f"clip_l.{key}"]
    from diffusion.patching import calculate_weight

    torch.testing.assert_close(calculate_weight(l1[key], entries), 0.25 * l1[key] + 0.75 * l2[key])
    assert not torch.equal(merged.encode("a red circle")[0], a.clip.encode("a red circle")[0])
    sub = merge.CLIPMergeSubtract(a.clip, b.clip, 1.0)
    assert all(not k.endswith(".position_ids") for k in sub.weight_patches)
