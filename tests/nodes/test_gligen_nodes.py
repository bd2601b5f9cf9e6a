"""GLIGENLoader and GLIGENTextBoxApply: the file's layout, boxes on conditioning, the fusers inside the UNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from diffusion.gligen import GATE, MAX_OBJECTS, Gligen, gligen_hooks, load_gligen, transformer_blocks, write_gligen
from diffusion.ksampler import ksample
from diffusion.synthetic import save_safetensors
from nodes.gligen import GLIGENTextBoxApply

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


@pytest.fixture(scope="module")
def gligen_path(tiny_sd15_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gligen(tmp_path_factory.mktemp("gligen") / "box.safetensors", base=tiny_sd15_path, seed=3)


def _gated(path: Path, out: Path, gate: float) -> Path:
    from safetensors.torch import load_file

    state = load_file(str(path))
    for key in state:
        if key.endswith(("alpha_attn", "alpha_dense")):
            state[key] = torch.tensor(gate, dtype=state[key].dtype)
    save_safetensors(state, out, {})
    return out


def _sample(ckpt: LoadedCheckpoint, positive: list) -> torch.Tensor:
    negative = [[torch.zeros(1, 77, 64), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return ksample(ckpt.unet, 5, 3, 4.0, "euler", "normal", positive, negative, latent)["samples"]


def _prompt(ckpt: LoadedCheckpoint) -> list:
    cond, _ = ckpt.clip.encode("a photo")
    return [[cond, {}]]


def test_file_has_the_published_layout_and_a_fuser_per_transformer_block(gligen_path: Path,
                                                                        ckpt: LoadedCheckpoint) -> None:
    from safetensors import safe_open

    with safe_open(str(gligen_path), "pt") as f:
        keys = set(f.keys())
    assert {"position_net.null_positive_feature", "position_net.null_position_feature",
            "position_net.linears.0.weight", "position_net.linears.4.bias",
            "input_blocks.1.1.transformer_blocks.0.fuser.attn.to_q.weight",
            "middle_block.1.transformer_blocks.0.fuser.ff.net.0.proj.weight",
            "input_blocks.1.1.transformer_blocks.0.fuser.alpha_attn"} <= keys
    gligen = load_gligen(gligen_path)
    assert set(gligen.fusers) == set(transformer_blocks(ckpt.unet.model))
    assert float(gligen.fusers["middle_block.1.transformer_blocks.0"].alpha_dense) == GATE
    assert gligen.position_net.null_position_feature.shape == (64,)  # 8 frequencies x sin/cos x 4 coordinates


def test_a_checkpoint_is_not_a_gligen_model(tiny_sd15_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a GLIGEN model"):
        load_gligen(tiny_sd15_path)


def test_boxes_add_up_on_every_entry_in_latent_pixels(gligen_path: Path, ckpt: LoadedCheckpoint) -> None:
    gligen = load_gligen(gligen_path)
    one = GLIGENTextBoxApply.func(_prompt(ckpt) * 2, ckpt.clip, gligen, "a cat", 32, 16, 8, 24)
    two = GLIGENTextBoxApply.func(one, ckpt.clip, gligen, "a dog", 64, 64, 0, 0)
    for entry in two:
        kind, model, boxes = entry[1]["gligen"]
        assert kind == "position" and model is gligen
        assert [b[1:] for b in boxes] == [(2, 4, 3, 1), (8, 8, 0, 0)]  # (h, w, y, x) / 8
    assert len(one[0][1]["gligen"][2]) == 1  # the input conditioning is not changed
    objs = gligen.objects(two[0][1]["gligen"][2], 2, 8, 8)
    assert objs.shape == (2, MAX_OBJECTS, 64)
    assert torch.equal(objs[:, 2], objs[:, 5])  # unused slots are the learnt null object


def test_gate_zero_leaves_the_sample_unchanged_and_the_box_steers_it(gligen_path: Path, ckpt: LoadedCheckpoint,
                                                                      tmp_path: Path) -> None:
    prompt = _prompt(ckpt)
    plain = _sample(ckpt, prompt)
    closed = load_gligen(_gated(gligen_path, tmp_path / "closed.safetensors", 0.0))
    boxed = GLIGENTextBoxApply.func(prompt, ckpt.clip, closed, "a cat", 32, 32, 0, 0)
    # The boxed side runs apart from the negative (a batch of 1, not 2), as in ComfyUI: equal up to rounding.
    assert torch.allclose(_sample(ckpt, boxed), plain, rtol=1e-5, atol=1e-3)
    unet, x, t = ckpt.unet.model, torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0])
    context = prompt[0][0].repeat(2, 1, 1)
    with torch.no_grad():
        bare = unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
        with gligen_hooks(unet, boxed[0][1]["gligen"], x.shape):
            hooked = unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
    assert torch.equal(hooked, bare)  # closed gates add exactly nothing in the same call
    gligen = load_gligen(gligen_path)
    left = _sample(ckpt, GLIGENTextBoxApply.func(prompt, ckpt.clip, gligen, "a cat", 32, 32, 0, 0))
    right = _sample(ckpt, GLIGENTextBoxApply.func(prompt, ckpt.clip, gligen, "a cat", 32, 32, 32, 32))
    assert not torch.allclose(left, plain, atol=1e-4)
    assert not torch.allclose(left, right, atol=1e-4)
    assert torch.equal(_sample(ckpt, prompt), plain)  # the hooks are gone after the run


def test_a_gligen_model_for_another_architecture_is_refused(tmp_path: Path, ckpt: LoadedCheckpoint,
                                                           gligen_path: Path) -> None:
    gligen = load_gligen(gligen_path)
    narrow = Gligen(gligen.position_net, gligen.fusers, 32)
    with pytest.raises(ValueError, match="GLIGENTextBoxApply: this CLIP gives 64-wide phrases"):
        GLIGENTextBoxApply.func(_prompt(ckpt), ckpt.clip, narrow, "a cat", 32, 32, 0, 0)
    missing = Gligen(gligen.position_net, dict(list(gligen.fusers.items())[1:]), 64, "half.safetensors")
    positive = GLIGENTextBoxApply.func(_prompt(ckpt), ckpt.clip, missing, "a cat", 32, 32, 0, 0)
    with pytest.raises(ValueError, match=r"half\.safetensors: a GLIGEN model for another architecture"):
        _sample(ckpt, positive)


def test_more_than_thirty_boxes_are_refused(gligen_path: Path, ckpt: LoadedCheckpoint) -> None:
    gligen = load_gligen(gligen_path)
    cond = _prompt(ckpt)
    pooled = ckpt.clip.encode("x")[1]
    cond[0][1]["gligen"] = ("position", gligen, [(pooled, 1, 1, 0, 0)] * MAX_OBJECTS)
    with pytest.raises(ValueError, match="at most 30 boxes"):
        GLIGENTextBoxApply.func(cond, ckpt.clip, gligen, "a cat", 32, 32, 0, 0)
