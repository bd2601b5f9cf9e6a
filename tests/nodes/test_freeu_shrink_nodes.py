"""FreeU, deep shrink and attention scaling: what each changes, and that the model given is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.ksampler import ksample
from diffusion.unet_patches.blocks import input_blocks, output_resnets
from diffusion.unet_patches.freeu import freeu_patch
from nodes import unet_patches as P

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_sd15_path: Path):
    from diffusion.checkpoint import load_checkpoint

    return load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))


def _sample(unet, clip, size: int = 8) -> torch.Tensor:
    cond, pooled = clip.encode("a red circle")
    positive = [[cond, {"pooled_output": pooled}]]
    negative = [[clip.encode("")[0], {"pooled_output": pooled}]]
    return ksample(unet, 5, 3, 4.0, "euler", "normal", positive, negative,
                   {"samples": torch.zeros(1, 4, size, size)})["samples"]


def test_freeu_scales_the_backbone_and_filters_the_skip_it_names() -> None:
    patch = freeu_patch(32, b1=2.0, b2=3.0, s1=0.0, s2=1.0)
    h, hsp = torch.ones(1, 128, 4, 4), torch.ones(1, 64, 4, 4) + torch.randn(1, 64, 4, 4)
    out_h, out_hsp = patch(h, hsp, {})
    assert out_h[:, :64].eq(2.0).all() and out_h[:, 64:].eq(1.0).all()  # 4 x 32 channels: b1 on the first half
    assert out_hsp.mean().abs() < 1e-5  # s1 = 0 removes the lowest frequencies, the mean among them
    out_h, out_hsp = patch(torch.ones(1, 64, 4, 4), hsp, {})
    assert out_h[:, :32].eq(3.0).all()
    torch.testing.assert_close(out_hsp, hsp, rtol=0, atol=1e-5)  # s2 = 1 keeps the skip
    h = torch.ones(1, 96, 4, 4)
    assert patch(h, hsp, {})[0] is h  # another width: untouched


def test_freeu_changes_the_image_and_neutral_freeu_does_not(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    patched = P.FreeU(unet, 1.5, 1.5, 0.5, 0.5)
    assert not torch.equal(_sample(patched, clip), plain)
    neutral = P.FreeU_V2(unet, 1.0, 1.0, 1.0, 1.0)
    torch.testing.assert_close(_sample(neutral, clip), plain, rtol=1e-4, atol=1e-3)  # only the FFT round trip differs
    assert unet.options == {} and torch.equal(_sample(unet, clip), plain)


def test_block_maps_follow_the_ldm_numbering(loaded) -> None:
    module = loaded.unet.model
    per_level, levels = module.config["layers_per_block"], len(module.down_blocks)
    inputs = input_blocks(module)
    assert [i for i, _, _ in inputs] == list(range(1 + levels * (per_level + 1) - 1))
    assert inputs[0][1] is module.conv_in and inputs[-1][2] is module.mid_block
    outputs = output_resnets(module)
    assert [i for i, _, _ in outputs] == list(range(levels * (per_level + 1)))
    assert all(r.in_channels > h for _, r, h in outputs)


def test_deep_shrink_keeps_the_shape_and_changes_only_inside_its_range(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip, size=16)
    for after_skip in (True, False):
        shrunk = P.PatchModelAddDownscale(unet, 1, 2.0, 0.0, 1.0, after_skip, "bicubic", "bicubic")
        out = _sample(shrunk, clip, size=16)
        assert out.shape == plain.shape and not torch.equal(out, plain)
    never = P.PatchModelAddDownscale(unet, 1, 2.0, 1.0, 1.0, True, "bicubic", "bicubic")  # a range no step reaches
    assert torch.equal(_sample(never, clip, size=16), plain)


def test_attention_multiply_scales_the_projections(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    assert torch.equal(_sample(P.UNetSelfAttentionMultiply(unet, 1.0, 1.0, 1.0, 1.0), clip), plain)
    doubled = P.UNetCrossAttentionMultiply(unet, 2.0, 1.0, 1.0, 0.5)
    key = next(k for k, _ in unet.model.named_parameters() if k.endswith("attn2.to_q.weight"))
    before = dict(unet.model.named_parameters())[key].detach().clone()
    with doubled.use() as module:
        assert torch.equal(dict(module.named_parameters())[key], before * 2.0)
    assert not torch.equal(_sample(doubled, clip), plain)
    scaled_clip = P.CLIPAttentionMultiply(clip, 1.0, 1.0, 3.0, 1.0)
    assert any(k.endswith("self_attn.v_proj.weight") for k in scaled_clip.weight_patches)
    assert not torch.equal(scaled_clip.encode("a red circle")[0], clip.encode("a red circle")[0])
