"""Attention patch points on the UNet, and the nodes built on them: what each changes and what it leaves alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.ksampler import ksample
from diffusion.patching import add_model_patch, set_model_patch_replace
from diffusion.unet_patches.attention import attention, attention_modules, spatial_transformers
from nodes import attention_patches as A

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_sd15_path: Path):
    from diffusion.checkpoint import load_checkpoint

    return load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))


def _sample(unet, clip, size: int = 8, cfg: float = 4.0) -> torch.Tensor:
    cond, pooled = clip.encode("a red circle")
    positive = [[cond, {"pooled_output": pooled}]]
    negative = [[clip.encode("")[0], {"pooled_output": pooled}]]
    return ksample(unet, 5, 3, cfg, "euler", "normal", positive, negative,
                   {"samples": torch.zeros(1, 4, size, size)})["samples"]


def _patched(unet, name: str, patch) -> object:
    out = unet.clone()
    add_model_patch(out.options, name, patch)
    return out


def test_a_no_op_patch_gives_the_image_bit_for_bit(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    same = _patched(unet, "attn1_patch", lambda q, k, v, extra: (q, k, v))
    add_model_patch(same.options, "attn2_output_patch", lambda out, extra: out)
    assert torch.equal(_sample(same, clip), plain)
    processors = [m.processor for _, _, m in attention_modules(unet.model)]
    scaled = _patched(unet, "attn2_patch", lambda q, k, v, extra: (q, k, v * 2.0))
    assert not torch.equal(_sample(scaled, clip), plain)
    assert [m.processor for _, _, m in attention_modules(unet.model)] == processors  # put back after the call
    assert unet.options == {} and torch.equal(_sample(unet, clip), plain)


def test_extra_options_carry_the_ldm_block_numbers(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    seen: list[tuple] = []

    def record(q, k, v, extra):
        seen.append((extra["block"], extra["block_index"], extra["transformer_index"], extra["n_heads"],
                     extra["dim_head"], tuple(extra["original_shape"]), tuple(extra["cond_or_uncond"])))
        assert q.shape[-1] == extra["n_heads"] * extra["dim_head"] or q.shape[-1] == k.shape[-1]
        return q, k, v

    _sample(_patched(unet, "attn1_patch", record), clip)
    module = unet.model
    per_level = module.config["layers_per_block"]
    expected = [block for block, _ in spatial_transformers(module)]
    calls = len(seen) // 3  # three steps
    assert [s[0] for s in seen[:calls]] == expected
    assert [s[2] for s in seen[:calls]] == list(range(calls))
    assert expected[0] == ("input", 1) and ("middle", 0) in expected
    assert all(b[0] != "output" or b[1] < len(module.up_blocks) * (per_level + 1) for b in expected)
    assert seen[0][5] == (2, 4, 8, 8) and seen[0][6] in ((0, 1), (1, 0))


def test_a_replacement_runs_only_at_its_key(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    calls: list[tuple] = []

    def plain_attention(q, k, v, extra):
        calls.append(extra["block"])
        return attention(q, k, v, extra["n_heads"])

    same = unet.clone()
    set_model_patch_replace(same.options, plain_attention, "attn1", "middle", 0, 0)
    assert torch.equal(_sample(same, clip), plain)
    assert calls and set(calls) == {("middle", 0)}
    value = unet.clone()
    set_model_patch_replace(value.options, lambda q, k, v, extra: q, "attn2", "middle", 0)
    assert not torch.equal(_sample(value, clip), plain)


def test_pag_changes_the_output_only_with_a_non_zero_scale(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    assert torch.equal(_sample(A.PerturbedAttentionGuidance(unet, 0.0), clip), plain)
    guided = _sample(A.PerturbedAttentionGuidance(unet, 3.0), clip)
    assert guided.shape == plain.shape and not torch.equal(guided, plain)
    assert unet.options == {}


def test_hypertile_keeps_the_shape_and_tiles_the_top_level(loaded) -> None:
    from diffusion.unet_patches.hypertile import hypertile_patches, random_divisor

    assert random_divisor(16, 4, 1) == 4 and random_divisor(7, 4, 2) == 1
    tile_in, tile_out = hypertile_patches(32, 1, 0, False)
    q = torch.arange(2 * 256 * 3, dtype=torch.float32).reshape(2, 256, 3)
    tiled, k, _ = tile_in(q, q, q, {"original_shape": [2, 4, 16, 16]})
    assert tiled.shape == (2 * 16, 16, 3) and k is q
    assert torch.equal(tiled[1, :4, 0], q[0, 4:8, 0]) and torch.equal(tiled[1, 4, 0], q[0, 20, 0])  # a 4x4 tile
    assert torch.equal(tile_out(tiled, {}), q)
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip, size=16)
    torch.manual_seed(0)
    out = _sample(A.HyperTile(unet, 32, 2, 0, False), clip, size=16)
    assert out.shape == plain.shape and torch.isfinite(out).all() and not torch.equal(out, plain)
    assert torch.equal(_sample(A.HyperTile(unet, 2048, 2, 0, False), clip), _sample(unet, clip))  # one tile: plain


class _Exec:
    """What the executor hands a node: ids, progress, interruption."""

    node_id, prompt_id = "1", "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        pass

    def check_interrupted(self) -> None:
        pass


def test_hypernetwork_loader_reads_the_a1111_layout_and_scales_with_strength(loaded, tiny_sd15_path: Path,
                                                                             tmp_path: Path) -> None:
    from diffusion.hypernetwork import load_hypernetwork
    from nodes.api import Context, Services
    from nodes.folders import Folders
    from nodes.model_tools import make_model

    path = make_model("hypernetwork", tmp_path / "models" / "hypernetworks" / "h.pt", base=tiny_sd15_path, seed=3)
    data = torch.load(path, weights_only=True)
    config = loaded.unet.model.config
    assert data["activation_func"] == "relu" and config["cross_attention_dim"] in data
    assert set(data[config["cross_attention_dim"]][0]) == {"linear.0.weight", "linear.0.bias", "linear.2.weight",
                                                           "linear.2.bias"}
    nets = load_hypernetwork(path)
    assert [type(m).__name__ for m in nets[config["cross_attention_dim"]][0]] == ["Linear", "ReLU", "Linear"]
    ctx = Context(_Exec(), Services(folders=Folders(tmp_path)))  # type: ignore[arg-type]
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    assert torch.equal(_sample(A.HypernetworkLoader(unet, "h.pt", 0.0, ctx=ctx), clip), plain)
    assert not torch.equal(_sample(A.HypernetworkLoader(unet, "h.pt", 1.0, ctx=ctx), clip), plain)
    (tmp_path / "models" / "hypernetworks" / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a hypernetwork file"):
        A.HypernetworkLoader(unet, "bad.pt", 1.0, ctx=ctx)


def test_sag_changes_the_output_only_with_a_non_zero_scale(loaded) -> None:
    from diffusion.unet_patches.sag import blurred_where_attended, gaussian_blur

    flat = torch.ones(1, 4, 8, 8)
    assert torch.allclose(gaussian_blur(flat, 9, 2.0), flat)
    x0 = torch.randn(1, 4, 8, 8)
    focused = torch.zeros(2, 4, 4)
    focused[:, :, 0] = 1.0  # every query of both heads looks at token 0 (the top-left quarter)
    blurred = blurred_where_attended(x0, focused, 2.0)
    assert not torch.equal(blurred[..., :4, :4], x0[..., :4, :4]) and torch.equal(blurred[..., 4:, :], x0[..., 4:, :])
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip, size=16)
    assert torch.equal(_sample(A.SelfAttentionGuidance(unet, 0.0, 2.0), clip, size=16), plain)
    guided = _sample(A.SelfAttentionGuidance(unet, 0.8, 2.0), clip, size=16)
    assert guided.shape == plain.shape and torch.isfinite(guided).all() and not torch.equal(guided, plain)


def test_tome_merges_similar_tokens_and_puts_every_token_back(loaded) -> None:
    from diffusion.unet_patches.tome import bipartite_merge

    torch.manual_seed(0)
    x = torch.randn(2, 64, 8)
    merge, unmerge = bipartite_merge(x, 8, 8, 16)
    merged = merge(x)
    assert merged.shape == (2, 48, 8)
    restored = unmerge(merged)
    assert restored.shape == x.shape
    assert (restored == x).all(dim=-1).sum(dim=1).ge(64 - 16 - 16).all()  # the unmerged sources come back as they were
    flat = torch.ones(1, 64, 8)
    flat_merge, flat_unmerge = bipartite_merge(flat, 8, 8, 16)
    assert torch.equal(flat_unmerge(flat_merge(flat)), flat)  # averaging equal tokens changes nothing
    same, _ = bipartite_merge(x, 8, 8, 0)
    assert same(x) is x
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip, size=16)
    assert torch.equal(_sample(A.TomePatchModel(unet, 0.0), clip, size=16), plain)
    torch.manual_seed(0)
    out = _sample(A.TomePatchModel(unet, 0.5), clip, size=16)
    assert out.shape == plain.shape and torch.isfinite(out).all() and not torch.equal(out, plain)
