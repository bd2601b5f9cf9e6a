"""The patchable model: shared base weights, ordered weight patches applied at use, cheap clones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion.patching import (
    DiffAdapter,
    PatchEntry,
    SetAdapter,
    add_model_patch,
    add_patches,
    applied_patches,
    apply_weight_patches,
    calculate_weight,
    clone_options,
    patched_weights,
    restore_weights,
    set_original_source,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_entries_apply_in_order_with_strength_and_model_strength() -> None:
    w = torch.arange(6.0).reshape(2, 3)
    d = torch.ones(2, 3)
    entries = (PatchEntry(DiffAdapter(d), 0.5), PatchEntry(DiffAdapter(d), 2.0, strength_model=0.25))
    assert torch.equal(calculate_weight(w, entries), (w + 0.5) * 0.25 + 2.0)
    assert torch.equal(w, torch.arange(6.0).reshape(2, 3))  # the original is not changed
    assert torch.equal(calculate_weight(w, (PatchEntry(SetAdapter(d * 7)),)), d * 7)


def test_offset_patches_a_slice() -> None:
    w = torch.zeros(6, 2)
    out = calculate_weight(w, (PatchEntry(DiffAdapter(torch.ones(2, 2)), 1.0, offset=(0, 2, 2)),))
    assert out[2:4].eq(1).all() and out[:2].eq(0).all() and out[4:].eq(0).all()


def test_stacking_and_removing_a_patch_gives_back_the_first_result_bit_for_bit() -> None:
    module = _module()
    original = module[0].weight.detach().clone()
    a = DiffAdapter(torch.randn(3, 4) * 1e-3)
    b = DiffAdapter(torch.randn(3, 4) * 1e-3)
    only_a = add_patches({}, {"0.weight": a}, 0.7)
    both = add_patches(only_a, {"0.weight": b}, 1.3)
    apply_weight_patches(module, only_a)
    first = module[0].weight.detach().clone()
    apply_weight_patches(module, both)
    assert not torch.equal(module[0].weight, first)
    apply_weight_patches(module, only_a)
    assert torch.equal(module[0].weight, first)
    restore_weights(module)
    assert torch.equal(module[0].weight, original)
    assert applied_patches(module) == {}


def test_unchanged_patch_set_is_not_recomputed_and_strength_change_is() -> None:
    module = _module()
    adapter = DiffAdapter(torch.ones(3, 4))
    apply_weight_patches(module, add_patches({}, {"0.weight": adapter}, 1.0))
    module[0].weight.data.add_(100.0)  # a marker: recomputing would remove it
    apply_weight_patches(module, add_patches({}, {"0.weight": adapter}, 1.0))  # equal entries: kept
    assert module[0].weight.min() > 50
    apply_weight_patches(module, add_patches({}, {"0.weight": adapter}, 0.5))  # new strength: recomputed
    assert module[0].weight.max() < 50


def test_unknown_key_is_named() -> None:
    with pytest.raises(KeyError, match=r"nope\.weight"):
        apply_weight_patches(_module(), add_patches({}, {"nope.weight": DiffAdapter(torch.ones(1))}))


def test_original_source_replaces_the_copy() -> None:
    module = _module()
    originals = {k: v.detach().clone() for k, v in module.state_dict().items()}
    reads: list[str] = []

    def source(key: str) -> torch.Tensor:
        reads.append(key)
        return originals[key]

    set_original_source(module, source)
    with patched_weights(module, add_patches({}, {"1.bias": DiffAdapter(torch.ones(2))})):
        assert torch.equal(module[1].bias, originals["1.bias"] + 1)
    restore_weights(module)
    assert torch.equal(module[1].bias, originals["1.bias"]) and reads == ["1.bias", "1.bias"]


def test_clone_options_copies_containers_not_values() -> None:
    fn = object()
    options: dict = {}
    add_model_patch(options, "attn1_patch", fn)
    copy = clone_options(options)
    add_model_patch(copy, "attn1_patch", fn)
    assert len(options["transformer_options"]["patches"]["attn1_patch"]) == 1
    assert copy["transformer_options"]["patches"]["attn1_patch"] == [fn, fn]


def test_unet_and_clip_values_clone_cheaply_and_patch_at_use(tiny_sd15_path) -> None:
    from diffusion.checkpoint import load_checkpoint

    loaded = load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))
    unet, clip = loaded.unet, loaded.clip
    key = next(k for k, _ in unet.model.named_parameters() if k.endswith("to_q.weight"))
    weight = dict(unet.model.named_parameters())[key]
    before = weight.detach().clone()
    patched = unet.with_patches({key: DiffAdapter(torch.ones_like(weight))}, 0.5)
    assert patched.model is unet.model and unet.weight_patches == {} and len(patched.weight_patches[key]) == 1
    with patched.use():
        assert torch.equal(weight, before + 0.5)
    with unet.use():
        assert torch.equal(weight, before)

    ckey = next(k for k, _ in clip.clip_l.named_parameters() if k.endswith("q_proj.weight"))
    plain = clip.encode("a red circle")[0]
    shifted = clip.with_patches({f"clip_l.{ckey}": DiffAdapter(torch.full_like(
        dict(clip.clip_l.named_parameters())[ckey], 0.05))})
    assert clip.weight_patches == {} and shifted.with_clip_skip(-2).weight_patches == shifted.weight_patches
    assert not torch.equal(shifted.encode("a red circle")[0], plain)
    assert torch.equal(clip.encode("a red circle")[0], plain)


def test_low_rank_runs_are_one_product_written_in_place_and_depend_only_on_the_entries() -> None:
    from diffusion.lora.kohya import LoraAdapter

    g = torch.Generator().manual_seed(3)
    module = nn.Sequential(nn.Linear(24, 16))
    weight = module[0].weight
    w0 = weight.detach().clone()
    a = LoraAdapter(torch.randn(16, 4, generator=g), torch.randn(4, 24, generator=g), alpha=2.0)
    b = LoraAdapter(torch.randn(16, 2, generator=g).half(), torch.randn(2, 24, generator=g).half())
    diff = DiffAdapter(torch.randn(16, 24, generator=g) * 0.1)
    stack = add_patches(add_patches(add_patches({}, {"0.weight": a}, 0.7), {"0.weight": diff}, 0.5),
                        {"0.weight": b}, 1.3)
    storage = weight.data_ptr()
    apply_weight_patches(module, stack)
    assert weight.data_ptr() == storage  # written into the parameter, not swapped for a new tensor
    expected = w0 + 0.7 * 0.5 * a.up @ a.down + 0.5 * diff.diff + 1.3 * b.up.float() @ b.down.float()
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)
    # A strength change of the last LoRA (after other patch sets) gives exactly the from-scratch weight.
    changed = add_patches(add_patches(add_patches({}, {"0.weight": a}, 0.7), {"0.weight": diff}, 0.5),
                          {"0.weight": b}, 0.2)
    apply_weight_patches(module, add_patches({}, {"0.weight": b}, 1.0))
    apply_weight_patches(module, changed)
    assert torch.equal(weight, calculate_weight(w0, changed["0.weight"]))
    # Two LoRAs in a row: one product [s_a a_a up_a | s_b up_b] @ [down_a; down_b], still their closed form.
    run = add_patches(add_patches({}, {"0.weight": a}, 0.7), {"0.weight": b}, -0.4)
    apply_weight_patches(module, run)
    torch.testing.assert_close(weight.detach(), w0 + 0.35 * a.up @ a.down - 0.4 * b.up.float() @ b.down.float(),
                               rtol=1e-5, atol=1e-6)
    restore_weights(module)
    assert torch.equal(weight, w0)


def test_half_precision_weights_are_computed_in_float32_and_cast_once() -> None:
    from diffusion.lora.kohya import LoraAdapter

    module = nn.Sequential(nn.Linear(8, 4)).to(torch.bfloat16)
    w0 = module[0].weight.detach().clone()
    lora = LoraAdapter(torch.full((4, 1), 0.5), torch.full((1, 8), 0.25))
    apply_weight_patches(module, add_patches({}, {"0.weight": lora}, 2.0))
    assert module[0].weight.dtype == torch.bfloat16
    assert torch.equal(module[0].weight, (w0.float() + 0.25).to(torch.bfloat16))
    restore_weights(module)
    assert torch.equal(module[0].weight, w0)
