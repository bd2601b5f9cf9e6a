"""Union ControlNets (ControlNet++): the released layout, the control type's effect, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetUnionModel
from safetensors.torch import load_file, save_file

from diffusion.checkpoint import load_checkpoint
from diffusion.control.load import load_control_model
from diffusion.control.models import Control, ControlModel, UNetInput
from diffusion.control.synthetic import write_union_controlnet
from diffusion.control.union import UNION_TYPES, UnionParts
from diffusion.models import LoadedCheckpoint
from diffusion.synthetic import write_checkpoint
from nodes.controlnet import UNION_TYPES as NODE_UNION_TYPES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("union")


@pytest.fixture(scope="module")
def xl_path(root: Path) -> Path:
    return write_checkpoint(root / "xl.safetensors", "sdxl", "tiny", 3, torch.float32)


@pytest.fixture(scope="module")
def xl(xl_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(xl_path, precision="fp32")


@pytest.fixture(scope="module")
def promax(root: Path, xl_path: Path) -> Path:
    return write_union_controlnet(root / "promax.safetensors", base=xl_path)


def residuals(model: ControlModel, xl: LoadedCheckpoint, union_type: str | None = None,
              strength: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 77, xl.unet.context_dim, generator=g)
    pooled = torch.randn(1, xl.unet.model.config.projection_class_embeddings_input_dim - 6 * 256, generator=g)
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}
    t = xl.unet.schedule.timestep(torch.tensor([2.0])).float()
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    out = Control(model.with_union_type(union_type), hint, strength=strength).residuals(
        UNetInput(x, t, 2.0, context, added, 1), xl.unet.schedule.percent_to_sigma)
    return [*out.down, out.mid] if out.down is not None else []


def test_the_layout_is_the_released_files_and_diffusers(promax: Path) -> None:
    state = load_file(promax)
    parts = {k for k in state if k.startswith(("task_embedding", "transformer_layes", "spatial_ch_projs",
                                                "control_add_embedding"))}
    assert state["task_embedding"].shape[0] == 8 and "transformer_layes.0.attn.in_proj_weight" in parts
    width = state["task_embedding"].shape[1]
    reference = ControlNetUnionModel(block_out_channels=(width, width * 2), down_block_types=(
        "DownBlock2D", "CrossAttnDownBlock2D"), num_control_type=8, num_trans_channel=width, num_trans_head=8,
        num_proj_channel=width, norm_num_groups=8, addition_time_embed_dim=256, layers_per_block=1,
        cross_attention_dim=32, attention_head_dim=8, conditioning_embedding_out_channels=(16, 32, 96, 256))
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items() if k.startswith(
        ("task_embedding", "transformer_layes", "spatial_ch_projs", "control_add_embedding"))}
    assert {k: tuple(state[k].shape) for k in parts} == theirs


def test_nodes_offer_the_models_types() -> None:
    assert ("auto", *UNION_TYPES) == NODE_UNION_TYPES


def test_the_control_type_steers_and_strength_scales(promax: Path, xl: LoadedCheckpoint) -> None:
    model = load_control_model(promax, precision="fp32")
    assert model.layout == "union" and isinstance(model.union, UnionParts) and model.union.types == 8
    auto = residuals(model, xl)
    depth = residuals(model, xl, "depth")
    tile = residuals(model, xl, "tile")
    assert all(r.abs().max() > 0 for r in auto)
    assert not torch.allclose(auto[0], depth[0], atol=1e-5)
    assert not torch.allclose(depth[0], tile[0], atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(residuals(model, xl, "depth"), depth, strict=True))
    assert residuals(model, xl, "depth", strength=0.0) == []  # strength 0 adds nothing
    # the hooks are gone after a call: the plain module gives what a plain ControlNet gives
    assert not model.module.time_embedding._forward_hooks and not model.module.controlnet_cond_embedding._forward_hooks


def test_zero_union_parts_are_the_plain_controlnet(root: Path, promax: Path, xl: LoadedCheckpoint) -> None:
    state = load_file(promax)
    zeroed = {k: torch.zeros_like(v) if k.startswith(("task_embedding", "spatial_ch_projs",
                                                      "control_add_embedding.linear_2")) else v
              for k, v in state.items()}
    save_file(zeroed, root / "zeroed.safetensors")
    plain = {k: v for k, v in state.items() if not k.startswith(
        ("task_embedding", "transformer_layes", "spatial_ch_projs", "control_add_embedding"))}
    save_file(plain, root / "plain.safetensors")
    union, base = (load_control_model(root / name, precision="fp32") for name in ("zeroed.safetensors",
                                                                                   "plain.safetensors"))
    assert base.union is None
    expected = residuals(base, xl)
    for union_type in (None, "openpose", "repaint"):
        got = residuals(union, xl, union_type)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected, strict=True))


def test_a_type_the_model_lacks_is_one_line(root: Path, xl_path: Path) -> None:
    six = load_control_model(write_union_controlnet(root / "union6.safetensors", base=xl_path, arch="union"),
                             precision="fp32")
    assert six.union.types == 6
    six.with_union_type("segment")
    with pytest.raises(ValueError, match=r"knows 6 control types; 'tile' is not one of them") as err:
        six.with_union_type("tile")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown union control type"):
        six.with_union_type("sketch")


def test_fuse_is_one_token_through_the_block(promax: Path) -> None:
    """The fused hint embedding by hand: one token, so attention is its value projection."""
    model = load_control_model(promax, precision="fp32")
    parts = model.union
    hint = torch.randn(2, parts.task_embedding.shape[1], 4, 4, generator=torch.Generator().manual_seed(1))
    block = parts.transformer_layes[0]
    token = hint.mean(dim=(2, 3)) + parts.task_embedding[3]
    width = token.shape[1]
    w, b = block.attn.in_proj_weight[2 * width:], block.attn.in_proj_bias[2 * width:]
    h = block.ln_1(token)
    token = token + block.attn.out_proj(h @ w.T + b)
    m = block.mlp.c_fc(block.ln_2(token))
    token = token + block.mlp.c_proj(m * torch.sigmoid(1.702 * m))
    expected = hint + parts.spatial_ch_projs(token)[:, :, None, None]
    assert torch.allclose(parts.fuse(hint, 3), expected, atol=1e-5)
