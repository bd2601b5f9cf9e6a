"""LoRA-family files as weight patches: key spellings, closed forms per format, stacking, bad files.

Expected weights are written out here from the formats' definitions (not through the
adapters' own ``diff()``), on a tiny fp32 SD1.5 checkpoint and seeded files in the real layouts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion.checkpoint import load_checkpoint
from diffusion.lora.keys import clip_stems, unet_stems
from diffusion.lora.load import LoraError, lora_patches, read_lora
from diffusion.lora.synthetic import write_lora
from diffusion.models import LoadedCheckpoint
from diffusion.patching import applied_patches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
KOHYA_TO_Q = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
CONV = "down_blocks.0.resnets.0.conv1"  # 3x3, 32 -> 32
KOHYA_CONV = "lora_unet_input_blocks_1_0_in_layers_2"
TE_Q = "encoder.layers.0.self_attn.q_proj"
KOHYA_TE_Q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))


def _base(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _unpatched(ckpt: LoadedCheckpoint) -> dict[str, torch.Tensor]:
    """The UNet's original weights (the shared module may still hold an earlier test's patches)."""
    with ckpt.unet.use() as module:
        return _base(module)


def _write(tmp_path: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def _patched_unet(ckpt: LoadedCheckpoint, path: Path, strength: float = 1.0) -> dict[str, torch.Tensor]:
    placed = lora_patches(read_lora(path), ckpt.unet, None)
    with ckpt.unet.with_patches(placed.unet, strength).use() as module:
        return _base(module)


def test_key_spellings_name_our_parameters(ckpt: LoadedCheckpoint) -> None:
    stems = unet_stems(ckpt.unet.model)
    for stem in (KOHYA_TO_Q, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                 f"unet.{TO_Q}", "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q",
                 f"base_model.model.{TO_Q}"):
        assert stems[stem] == ("unet", TO_Q), stem
    assert stems[KOHYA_CONV] == ("unet", CONV)
    assert stems["lora_unet_middle_block_1_proj_in"] == ("unet", "mid_block.attentions.0.proj_in")
    assert stems["lora_unet_output_blocks_1_1_conv"] == ("unet", "up_blocks.0.upsamplers.0.conv")
    assert stems["lora_unet_output_blocks_0_0_skip_connection"] == ("unet", "up_blocks.0.resnets.0.conv_shortcut")
    te = clip_stems("sd1", "clip_l", ckpt.clip.clip_l)
    for stem in (KOHYA_TE_Q, f"text_encoder.text_model.{TE_Q}", f"text_encoders.clip_l.transformer.text_model.{TE_Q}"):
        assert te[stem] == ("clip_l", TE_Q), stem


@pytest.mark.parametrize("strength", [1.0, -0.6])
def test_kohya_lora_is_w_plus_strength_alpha_over_rank_up_down(ckpt, tmp_path, tiny_sd15_path, strength) -> None:
    path = write_lora(tmp_path / "l.safetensors", base=tiny_sd15_path, rank=4, seed=3, kind="lora")
    tensors = read_lora(path)
    raw = {k: v.float() for k, v in _load(path).items()}
    base = _unpatched(ckpt)
    patched = _patched_unet(ckpt, path, strength)
    stems = unet_stems(ckpt.unet.model)
    checked = 0
    for key in raw:
        if not key.startswith("lora_unet_") or not key.endswith(".lora_up.weight"):
            continue
        stem = key.removesuffix(".lora_up.weight")
        up, down, alpha = raw[key], raw[stem + ".lora_down.weight"], raw[stem + ".alpha"].item()
        name = stems[stem][1] + ".weight"
        product = (up.flatten(1) @ down.flatten(1)).reshape(base[name].shape)
        torch.testing.assert_close(patched[name], base[name] + strength * alpha / down.shape[0] * product,
                                   rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked == 48 and len(tensors.adapters) == 60
    untouched = set(base) - {stems[k.removesuffix(".lora_up.weight")][1] + ".weight" for k in raw
                             if k.startswith("lora_unet_") and k.endswith(".lora_up.weight")}
    assert all(torch.equal(patched[k], base[k]) for k in untouched)


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_text_encoder_patches_use_clip_slot_names(ckpt, tmp_path, tiny_sd15_path) -> None:
    path = write_lora(tmp_path / "l.safetensors", base=tiny_sd15_path, rank=2, seed=1, kind="lora")
    raw = _load(path)
    placed = lora_patches(read_lora(path), ckpt.unet, ckpt.clip)
    assert len(placed.clip) == 12 and all(k.startswith("clip_l.encoder.layers.") for k in placed.clip)
    clip = ckpt.clip.with_patches(placed.clip, 0.5)
    base = ckpt.clip.clip_l.get_parameter(TE_Q + ".weight").detach().clone()
    with __import__("diffusion.patching", fromlist=["x"]).patched_weights(ckpt.clip.clip_l,
                                                                         clip.slot_patches("clip_l")) as model:
        got = model.get_parameter(TE_Q + ".weight").detach().clone()
    up, down = raw[KOHYA_TE_Q + ".lora_up.weight"].float(), raw[KOHYA_TE_Q + ".lora_down.weight"].float()
    alpha = raw[KOHYA_TE_Q + ".alpha"].item()
    torch.testing.assert_close(got, base + 0.5 * alpha / 2 * up @ down, rtol=1e-5, atol=1e-6)


def test_loha_lokr_and_diffusers_files_are_their_closed_forms(ckpt, tmp_path, tiny_sd15_path) -> None:
    base = _unpatched(ckpt)
    w = base[TO_Q + ".weight"]
    loha = write_lora(tmp_path / "h.safetensors", base=tiny_sd15_path, rank=4, seed=2, kind="loha")
    r = {k: v.float() for k, v in _load(loha).items()}
    p = KOHYA_TO_Q
    expected = w + 0.8 * (r[p + ".alpha"].item() / 4) * (r[p + ".hada_w1_a"] @ r[p + ".hada_w1_b"]) * (
        r[p + ".hada_w2_a"] @ r[p + ".hada_w2_b"])
    torch.testing.assert_close(_patched_unet(ckpt, loha, 0.8)[TO_Q + ".weight"], expected, rtol=1e-5, atol=1e-6)

    lokr = write_lora(tmp_path / "k.safetensors", base=tiny_sd15_path, rank=4, seed=2, kind="lokr")
    r = {k: v.float() for k, v in _load(lokr).items()}
    w2 = r[p + ".lokr_w2_a"] @ r[p + ".lokr_w2_b"]
    expected = w + (r[p + ".alpha"].item() / 4) * torch.kron(r[p + ".lokr_w1"], w2)
    torch.testing.assert_close(_patched_unet(ckpt, lokr)[TO_Q + ".weight"], expected, rtol=1e-5, atol=1e-6)

    peft = write_lora(tmp_path / "d.safetensors", base=tiny_sd15_path, rank=4, seed=2, kind="diffusers-lora")
    r = {k: v.float() for k, v in _load(peft).items()}
    expected = w + 1.5 * r[f"unet.{TO_Q}.lora_B.weight"] @ r[f"unet.{TO_Q}.lora_A.weight"]  # no alpha: scale 1
    torch.testing.assert_close(_patched_unet(ckpt, peft, 1.5)[TO_Q + ".weight"], expected, rtol=1e-5, atol=1e-6)


def test_locon_conv_with_tucker_mid_and_dora(ckpt, tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    w = _unpatched(ckpt)[CONV + ".weight"]  # (32, 32, 3, 3)
    up, down, mid = (torch.randn(32, 4, 1, 1, generator=g), torch.randn(4, 32, 1, 1, generator=g) * 0.1,
                     torch.randn(4, 4, 3, 3, generator=g) * 0.1)
    dora = torch.rand(32, 1, 1, 1, generator=g) + 0.5
    path = _write(tmp_path, "c.safetensors", {
        f"{KOHYA_CONV}.lora_up.weight": up, f"{KOHYA_CONV}.lora_down.weight": down,
        f"{KOHYA_CONV}.lora_mid.weight": mid, f"{KOHYA_CONV}.alpha": torch.tensor(2.0),
        f"{KOHYA_TO_Q}.lora_up.weight": torch.randn(32, 2, generator=g),
        f"{KOHYA_TO_Q}.lora_down.weight": torch.randn(2, 32, generator=g) * 0.1,
        f"{KOHYA_TO_Q}.dora_scale": dora[:, :, 0, 0]})
    # Tucker: down'[i, j, h, w] = sum_k mid[i, k, h, w] down[k, j]; diff = up @ down'.
    combined = torch.einsum("ikhw,kj->ijhw", mid, down[:, :, 0, 0])
    diff = (up[:, :, 0, 0] @ combined.flatten(1)).reshape(w.shape) * (2.0 / 4)
    patched = _patched_unet(ckpt, path, 0.7)
    torch.testing.assert_close(patched[CONV + ".weight"], w + 0.7 * diff, rtol=1e-5, atol=1e-6)
    # DoRA: m * (W + dW) / ||W + dW|| per output row, then blended by strength.
    raw = _load(path)
    wq = _unpatched(ckpt)[TO_Q + ".weight"]
    calc = wq + raw[f"{KOHYA_TO_Q}.lora_up.weight"] @ raw[f"{KOHYA_TO_Q}.lora_down.weight"]
    calc = calc * (dora[:, :, 0, 0] / calc.norm(dim=1, keepdim=True))
    torch.testing.assert_close(patched[TO_Q + ".weight"], wq + 0.7 * (calc - wq), rtol=1e-5, atol=1e-6)


def test_tucker_loha_lokr_ia3_oft_and_diffs(ckpt, tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    base = _unpatched(ckpt)
    w, wq = base[CONV + ".weight"], base[TO_Q + ".weight"]
    t = {n: torch.randn(*s, generator=g) * 0.3 for n, s in (
        ("w1_a", (2, 32)), ("w1_b", (2, 32)), ("w2_a", (2, 32)), ("w2_b", (2, 32)), ("t1", (2, 2, 3, 3)),
        ("t2", (2, 2, 3, 3)), ("k_w1", (4, 4)), ("k_w2_a", (2, 8)), ("k_w2_b", (2, 8)), ("k_t2", (2, 2, 3, 3)),
        ("ia3", (32,)), ("oft", (4, 8, 8)))}
    k_stem = "lora_unet_input_blocks_1_0_out_layers_3"  # conv2, 3x3 32 -> 32
    norm_stem = "lora_unet_input_blocks_1_1_norm"
    diff_stem = "lora_unet_input_blocks_1_1_proj_in"
    q2 = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k"
    path = _write(tmp_path, "ly.safetensors", {
        **{f"{KOHYA_CONV}.hada_{n}": t[n] for n in ("w1_a", "w1_b", "w2_a", "w2_b", "t1", "t2")},
        f"{k_stem}.lokr_w1": t["k_w1"], f"{k_stem}.lokr_w2_a": t["k_w2_a"], f"{k_stem}.lokr_w2_b": t["k_w2_b"],
        f"{k_stem}.lokr_t2": t["k_t2"], f"{k_stem}.alpha": torch.tensor(1.0),
        f"{KOHYA_TO_Q}.weight": t["ia3"], f"{KOHYA_TO_Q}.on_input": torch.tensor([False]),
        f"{q2}.oft_blocks": t["oft"],
        f"{norm_stem}.w_norm": torch.full((32,), 0.25), f"{norm_stem}.b_norm": torch.full((32,), -0.5),
        f"{diff_stem}.diff": torch.ones(32, 32, 1, 1), f"{diff_stem}.diff_b": torch.ones(32)})
    patched = _patched_unet(ckpt, path, 0.5)

    def tucker(core, b, a):
        return torch.einsum("ijkl,jr,ip->prkl", core, b, a)

    loha = tucker(t["t1"], t["w1_b"], t["w1_a"]) * tucker(t["t2"], t["w2_b"], t["w2_a"])  # no alpha: scale 1
    torch.testing.assert_close(patched[CONV + ".weight"], w + 0.5 * loha, rtol=1e-5, atol=1e-6)
    kron = torch.kron(t["k_w1"][:, :, None, None], tucker(t["k_t2"], t["k_w2_b"], t["k_w2_a"]).contiguous()) * (1.0 / 2)
    name = "down_blocks.0.resnets.0.conv2.weight"
    torch.testing.assert_close(patched[name], base[name] + 0.5 * kron, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(patched[TO_Q + ".weight"], wq + 0.5 * wq * t["ia3"][:, None], rtol=1e-5, atol=1e-6)
    skew = t["oft"] - t["oft"].transpose(1, 2)
    eye = torch.eye(8).expand(4, 8, 8)
    rot = (eye + skew) @ torch.linalg.inv(eye - skew)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-5)  # Cayley: orthogonal
    wk = base[TO_Q.replace("to_q", "to_k") + ".weight"]
    rotated = torch.einsum("knm,knc->kmc", rot, wk.reshape(4, 8, -1)).reshape(wk.shape)
    # ComfyUI scales an OFT change by the strength twice: 0.5 -> 0.25
    torch.testing.assert_close(patched[TO_Q.replace("to_q", "to_k") + ".weight"], wk + 0.25 * (rotated - wk),
                               rtol=1e-5, atol=1e-5)
    norm = "down_blocks.0.attentions.0.norm"
    torch.testing.assert_close(patched[norm + ".weight"], base[norm + ".weight"] + 0.125)
    torch.testing.assert_close(patched[norm + ".bias"], base[norm + ".bias"] - 0.25)
    proj = "down_blocks.0.attentions.0.proj_in"
    torch.testing.assert_close(patched[proj + ".weight"], base[proj + ".weight"] + 0.5)
    torch.testing.assert_close(patched[proj + ".bias"], base[proj + ".bias"] + 0.5)


def test_stacking_two_and_removing_one_gives_back_the_first_bit_for_bit(ckpt, tmp_path, tiny_sd15_path) -> None:
    a = write_lora(tmp_path / "a.safetensors", base=tiny_sd15_path, rank=4, seed=5, kind="lora")
    b = write_lora(tmp_path / "b.safetensors", base=tiny_sd15_path, rank=4, seed=6, kind="locon")
    first = ckpt.unet.with_patches(lora_patches(read_lora(a), ckpt.unet).unet, 0.9)
    with first.use() as module:
        alone = _base(module)
    both = first.with_patches(lora_patches(read_lora(b), ckpt.unet).unet, 1.3)
    with both.use() as module:
        stacked = _base(module)
        assert len(applied_patches(module)) == 79
    assert any(not torch.equal(stacked[k], alone[k]) for k in alone)
    with first.use() as module:
        again = _base(module)
    assert all(torch.equal(again[k], alone[k]) for k in alone)
    with ckpt.unet.use() as module:
        assert applied_patches(module) == {}


def test_unknown_keys_warn_once_and_the_rest_applies(ckpt, tmp_path, caplog) -> None:
    path = _write(tmp_path, "u.safetensors", {
        f"{KOHYA_TO_Q}.lora_up.weight": torch.ones(32, 1), f"{KOHYA_TO_Q}.lora_down.weight": torch.ones(1, 32),
        "lora_unet_no_such_block.lora_up.weight": torch.ones(4, 1),
        "lora_unet_no_such_block.lora_down.weight": torch.ones(1, 4), "something_else": torch.ones(2)})
    with caplog.at_level(logging.WARNING, logger="diffusion.lora.load"):
        patched = _patched_unet(ckpt, path)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "lora_unet_no_such_block" in warnings[0] and "something_else" in warnings[0]
    torch.testing.assert_close(patched[TO_Q + ".weight"], _unpatched(ckpt)[TO_Q + ".weight"] + 1.0)


def test_a_checkpoint_or_another_architectures_lora_is_a_one_line_error(ckpt, tmp_path, tiny_sd15_path) -> None:
    with pytest.raises(LoraError, match=r"^sd15\.safetensors: not a LoRA file") as info:
        read_lora(tiny_sd15_path)
    assert "\n" not in str(info.value)
    from diffusion.synthetic import write_checkpoint

    sdxl = write_checkpoint(tmp_path / "xl.safetensors", "sdxl", "tiny", 0, torch.float16)
    xl_lora = write_lora(tmp_path / "xl-lora.safetensors", base=sdxl, rank=2, seed=0, kind="lora")
    another = r"^xl-lora\.safetensors: made for another model \(only \d+ of its 112 layers fit this sd1"
    with pytest.raises(LoraError, match=another):
        lora_patches(read_lora(xl_lora), ckpt.unet, ckpt.clip)
    with pytest.raises(LoraError, match="no such file"):
        read_lora(tmp_path / "missing.safetensors")


def test_diffusers_processor_and_sdxl_spellings(tmp_path) -> None:
    from diffusion.lora.load import _split

    assert _split(f"unet.{TO_Q.replace('to_q', 'processor.to_out_lora')}.up.weight") == (
        f"unet.{TO_Q.replace('to_q', 'to_out.0')}", "up")
    assert _split(f"unet.{TO_Q}.lora_A.weight") == (f"unet.{TO_Q}", "down")
    assert _split(f"{KOHYA_TO_Q}.lora_up.weight") == (KOHYA_TO_Q, "up")
    from diffusion.synthetic import build_models, synthetic_spec

    models = build_models(synthetic_spec("sdxl", "tiny"))
    assert clip_stems("sdxl", "clip_g", models["clip_g"])[KOHYA_TE_Q.replace("lora_te", "lora_te2")] == (
        "clip_g", "text_model." + TE_Q)
    assert clip_stems("sdxl", "clip_l", models["clip_l"])["text_encoder." + "text_model." + TE_Q] == ("clip_l", TE_Q)


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_originals_reread_from_the_file_are_the_loaded_weights(tmp_path: Path, arch: str) -> None:
    from diffusion.original_sources import attach_file_sources
    from diffusion.patching import _state
    from diffusion.synthetic import write_checkpoint

    path = write_checkpoint(tmp_path / f"{arch}.safetensors", arch, "tiny", 7, torch.float16)
    loaded = load_checkpoint(path, precision="fp32", device=torch.device("cpu"))
    assert attach_file_sources(loaded)
    modules = [loaded.unet.model, *(m for m in (loaded.clip.clip_l, loaded.clip.clip_g) if m is not None)]
    for module in modules:
        source = _state(module).source
        for name, value in module.named_parameters():
            again = source(name)
            assert again is not None and torch.equal(again, value), name
    lora = write_lora(tmp_path / "l.safetensors", base=path, rank=2, seed=0, kind="locon")
    placed = lora_patches(read_lora(lora), loaded.unet, loaded.clip)
    before = _base(loaded.unet.model)
    with loaded.unet.with_patches(placed.unet).use() as module:
        assert _state(module).originals == {}  # nothing copied: originals come from the file
    with loaded.unet.use() as module:
        assert all(torch.equal(v, before[k]) for k, v in module.named_parameters())


def test_a_patch_that_fails_leaves_the_model_unpatched(ckpt) -> None:
    from diffusion.lora.kohya import LoraAdapter

    before = _unpatched(ckpt)
    good = LoraAdapter(torch.ones(32, 1), torch.ones(1, 32))
    bad = LoraAdapter(torch.ones(7, 1), torch.ones(1, 3))  # fits no weight
    applied = ckpt.unet.with_patches({TO_Q + ".weight": good})
    with applied.use():
        pass
    broken = applied.with_patches({TO_Q + ".weight": good, CONV + ".weight": bad}, 0.5)
    with pytest.raises(ValueError, match="does not fit"), broken.use():
        pass
    with ckpt.unet.use() as module:
        assert applied_patches(module) == {}
        assert all(torch.equal(v, before[k]) for k, v in module.named_parameters())


def test_glora_is_b2_b1_plus_w_a2_a1(ckpt, tmp_path) -> None:
    g = torch.Generator().manual_seed(2)
    a1, a2, b1, b2 = (torch.randn(*s, generator=g) * 0.2 for s in ((3, 32), (32, 3), (3, 32), (32, 3)))
    path = _write(tmp_path, "g.safetensors", {f"{KOHYA_TO_Q}.a1.weight": a1, f"{KOHYA_TO_Q}.a2.weight": a2,
                                              f"{KOHYA_TO_Q}.b1.weight": b1, f"{KOHYA_TO_Q}.b2.weight": b2,
                                              f"{KOHYA_TO_Q}.alpha": torch.tensor(1.5)})
    w = _unpatched(ckpt)[TO_Q + ".weight"]
    expected = w + 0.6 * (1.5 / 3) * (b2 @ b1 + w @ a2 @ a1)
    torch.testing.assert_close(_patched_unet(ckpt, path, 0.6)[TO_Q + ".weight"], expected, rtol=1e-5, atol=1e-6)


def _butterfly_order(rows: int, span: int) -> list[int]:
    """Row order of one BOFT level: in each run of ``2 * span`` rows, row ``j`` then row ``j + span``."""
    return [base + half * span + j for base in range(0, rows, 2 * span) for j in range(span) for half in (0, 1)]


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_boft_is_the_butterfly_of_rotations(ckpt, tmp_path, strength: float) -> None:
    g = torch.Generator().manual_seed(4)
    blocks = torch.randn(2, 4, 8, 8, generator=g) * 0.2  # 2 levels, 4 blocks of 8 rows: 32 rows
    rescale = 1 + 0.1 * torch.randn(32, 1, generator=g)
    stem = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v"
    path = _write(tmp_path, "boft.safetensors", {f"{stem}.oft_blocks": blocks, f"{stem}.rescale": rescale,
                                                 f"{stem}.alpha": torch.tensor(0.0)})
    lora = read_lora(path)
    assert not lora.unparsed
    patched = _patched_unet(ckpt, path, strength)
    name = TO_Q.replace("to_q", "to_v") + ".weight"
    w = _unpatched(ckpt)[name]
    eye = torch.eye(8)
    skew = blocks - blocks.transpose(-1, -2)
    rot = (eye + skew) @ torch.linalg.inv(eye - skew)
    x = w.clone()
    for level in range(2):
        r = rot[level] * strength + eye * (1 - strength)
        order = _butterfly_order(32, 2 ** level * 4)
        moved = x[order]
        moved = torch.block_diag(*r) @ moved
        x = torch.empty_like(x)
        x[order] = moved
    expected = w + strength * (rescale * x - w)
    torch.testing.assert_close(patched[name], expected, rtol=1e-5, atol=1e-5)
