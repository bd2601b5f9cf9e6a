"""ControlNets and T2I-Adapters: loading every layout by shape, and what their residuals do to sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel

from diffusion import convert
from diffusion.checkpoint import CheckpointError, load_checkpoint
from diffusion.control.inject import spread_to_uncond
from diffusion.control.load import load_control_model
from diffusion.control.models import Control, ControlModel, UNetInput
from diffusion.control.synthetic import write_control_lora, write_controlnet, write_diff_controlnet, write_t2i_adapter
from diffusion.ksampler import ksample
from diffusion.models import LoadedCheckpoint
from diffusion.synthetic import write_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LATENT = {"samples": torch.zeros(1, 4, 8, 8)}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("control")


@pytest.fixture(scope="module")
def bases(root: Path) -> dict[str, Path]:
    return {arch: write_checkpoint(root / f"{arch}.safetensors", arch, "tiny", 3, torch.float32)
            for arch in ("sd15", "sd2", "sdxl")}


@pytest.fixture(scope="module")
def sd15(bases: dict[str, Path]) -> LoadedCheckpoint:
    return load_checkpoint(bases["sd15"], precision="fp32")


def conds(ckpt: LoadedCheckpoint, seed: int = 0) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    dim = ckpt.unet.context_dim
    return [[torch.randn(1, 77, dim, generator=g), {}]], [[torch.randn(1, 77, dim, generator=g), {}]]


def hint(batch: int = 1, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(batch, size, size, 3, generator=g)


def with_control(conditioning: list, control: Control) -> list:
    return [[c, {**o, "control": control}] for c, o in conditioning]


def sample(ckpt: LoadedCheckpoint, positive: list, negative: list, steps: int = 3) -> torch.Tensor:
    return ksample(ckpt.unet, 7, steps, 4.0, "euler", "normal", positive, negative, LATENT)["samples"]


def own_encoder_controlnet(ckpt: LoadedCheckpoint) -> ControlModel:
    """A ControlNet copied from the UNet's own encoder; diffusers zeroes its output convolutions."""
    module = ControlNetModel.from_unet(ckpt.unet.model).eval()
    return ControlModel("controlnet", module, "sd1", tuple(module.config.block_out_channels),
                        module.config.cross_attention_dim, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def controlnet(root: Path, bases: dict[str, Path]) -> ControlModel:
    return load_control_model(write_controlnet(root / "cn.safetensors", base=bases["sd15"]), precision="fp32")


@pytest.fixture(scope="module")
def adapter(root: Path, bases: dict[str, Path]) -> ControlModel:
    return load_control_model(write_t2i_adapter(root / "t2i.safetensors", base=bases["sd15"]), precision="fp32")


# -- loading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_controlnet_loads_the_same_from_both_layouts(root: Path, bases: dict[str, Path], arch: str) -> None:
    ldm = load_control_model(write_controlnet(root / f"{arch}-ldm.safetensors", base=bases[arch]), precision="fp32")
    dif = load_control_model(write_controlnet(root / f"{arch}-dif.safetensors", base=bases[arch], arch="diffusers"),
                             precision="fp32")
    assert (ldm.layout, dif.layout) == ("ldm", "diffusers")
    assert ldm.arch == dif.arch == {"sd15": "sd1", "sd2": "sd2", "sdxl": "sdxl"}[arch]
    a, b = ldm.module.state_dict(), dif.module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    if arch == "sdxl":
        assert "add_embedding.linear_1.weight" in a  # the ADM input is carried over from label_emb


@pytest.mark.parametrize("variant", ["full", "light", "xl"])
def test_t2i_adapter_loads_the_same_from_both_layouts(root: Path, variant: str) -> None:
    orig = load_control_model(write_t2i_adapter(root / f"{variant}.safetensors", arch=variant), precision="fp32")
    dif = load_control_model(write_t2i_adapter(root / f"{variant}-d.safetensors", arch=variant + "-diffusers"),
                             precision="fp32")
    assert orig.layout == ("light" if variant == "light" else "full")
    assert dif.layout == orig.layout + "-diffusers"
    assert orig.unshuffle == (16 if variant == "xl" else 8) and orig.arch == ("sdxl" if variant == "xl" else "sd1")
    a, b = orig.module.state_dict(), dif.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    features = orig.module(torch.rand(1, 3, 128, 128))
    assert [f.shape[1] for f in features] == [32, 64, 128, 128]


def test_diff_controlnet_is_the_difference_to_the_model(root: Path, bases: dict[str, Path],
                                                        sd15: LoadedCheckpoint, controlnet: ControlModel) -> None:
    path = write_diff_controlnet(root / "diff.safetensors", base=bases["sd15"])
    with pytest.raises(CheckpointError, match="needs the model"):
        load_control_model(path, precision="fp32")
    loaded = load_control_model(path, precision="fp32", base=sd15.unet)
    a, b = loaded.module.state_dict(), controlnet.module.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-3  # fp16 storage of difference and base


def test_other_files_are_refused_in_one_line(bases: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match="a checkpoint, not a ControlNet") as info:
        load_control_model(bases["sd15"], precision="fp32")
    assert "\n" not in str(info.value)


# -- applying -----------------------------------------------------------------------------------------


def test_own_encoder_controlnet_with_zero_outputs_changes_nothing(sd15: LoadedCheckpoint) -> None:
    pos, neg = conds(sd15)
    control = Control(own_encoder_controlnet(sd15), hint())
    assert torch.equal(sample(sd15, with_control(pos, control), with_control(neg, control)), sample(sd15, pos, neg))


def test_strength_zero_and_an_empty_range_change_nothing(sd15: LoadedCheckpoint, controlnet: ControlModel) -> None:
    pos, neg = conds(sd15)
    plain = sample(sd15, pos, neg)
    full = Control(controlnet, hint())
    assert not torch.allclose(sample(sd15, with_control(pos, full), neg), plain, atol=1e-4)
    for control in (Control(controlnet, hint(), strength=0.0), Control(controlnet, hint(), percent_range=(1.0, 1.0))):
        assert torch.equal(sample(sd15, with_control(pos, control), with_control(neg, control)), plain)


def call_for(ckpt: LoadedCheckpoint, context: torch.Tensor, sigma: float = 2.0) -> UNetInput:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=g)
    t = ckpt.unet.schedule.timestep(torch.tensor([sigma])).float()
    return UNetInput(x, t, sigma, context, None, 1)


@pytest.mark.parametrize("which", ["controlnet", "adapter"])
def test_doubling_strength_doubles_the_residuals(sd15: LoadedCheckpoint, request: pytest.FixtureRequest,
                                                 which: str) -> None:
    model = request.getfixturevalue(which)
    call = call_for(sd15, conds(sd15)[0][0][0])
    one = Control(model, hint(), strength=0.7).residuals(call, sd15.unet.schedule.percent_to_sigma)
    two = Control(model, hint(), strength=1.4).residuals(call, sd15.unet.schedule.percent_to_sigma)
    parts = (one.down or []) + (one.adapter or []) + ([one.mid] if one.mid is not None else [])
    doubled = (two.down or []) + (two.adapter or []) + ([two.mid] if two.mid is not None else [])
    assert parts and all(p.abs().max() > 0 for p in parts)
    assert all(torch.allclose(2 * a, b, rtol=1e-5, atol=1e-6) for a, b in zip(parts, doubled, strict=True))


def test_chained_controls_sum_and_each_keeps_its_range(sd15: LoadedCheckpoint, controlnet: ControlModel,
                                                       adapter: ControlModel) -> None:
    call = call_for(sd15, conds(sd15)[0][0][0], sigma=2.0)
    to_sigma = sd15.unet.schedule.percent_to_sigma
    first = Control(controlnet, hint())
    second = Control(adapter, hint(), previous=first)
    both = second.residuals(call, to_sigma)
    assert both.down is not None and both.adapter is not None
    late = Control(adapter, hint(), percent_range=(0.99, 1.0), previous=first)  # the adapter only at the very end
    only_first = late.residuals(call, to_sigma)
    assert only_first.adapter is None
    assert all(torch.equal(a, b) for a, b in zip(only_first.down, both.down, strict=True))


def test_t2i_adapter_steers_sampling(sd15: LoadedCheckpoint, adapter: ControlModel) -> None:
    pos, neg = conds(sd15)
    steered = sample(sd15, with_control(pos, Control(adapter, hint())), neg)
    assert not torch.allclose(steered, sample(sd15, pos, neg), atol=1e-4)


def test_control_model_for_another_model_is_refused(root: Path, bases: dict[str, Path],
                                                    sd15: LoadedCheckpoint) -> None:
    xl = load_control_model(write_controlnet(root / "xl.safetensors", base=bases["sdxl"]), precision="fp32")
    pos, neg = conds(sd15)
    with pytest.raises(ValueError, match=r"ControlNet for sdxl .* does not fit this sd1 model") as info:
        sample(sd15, with_control(pos, Control(xl, hint())), neg)
    assert "\n" not in str(info.value)


def test_hint_of_another_batch_size_is_refused(sd15: LoadedCheckpoint, controlnet: ControlModel) -> None:
    pos, neg = conds(sd15)
    with pytest.raises(ValueError, match="hint image has a batch of 3 but the latent has 1"):
        sample(sd15, with_control(pos, Control(controlnet, hint(batch=3))), neg)


def test_old_apply_controls_are_spread_to_the_negative_side() -> None:
    control = object()
    positive = [["p", {"control": control, "control_apply_to_uncond": True}]]
    negative = [["n", {}], ["area", {"area": (1, 1, 0, 0)}]]
    spread = spread_to_uncond(positive, negative)
    assert spread[0][1]["control"] is control and "control" not in spread[1][1]
    assert "control" not in negative[0][1]  # the input is not changed
    advanced = [["p", {"control": control, "control_apply_to_uncond": False}]]
    assert "control" not in spread_to_uncond(advanced, negative)[0][1]


# -- control-LoRA -------------------------------------------------------------------------------------


def test_control_lora_is_built_from_the_models_own_weights(root: Path, bases: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    path = write_control_lora(root / "control-lora.safetensors", base=bases["sdxl"], rank=2)
    lora = load_control_model(path, precision="fp32")
    assert lora.layout == "control-lora" and lora.module is None and lora.arch == "sdxl"
    xl = load_checkpoint(bases["sdxl"], precision="fp32")
    built = lora.for_model(xl.unet)
    assert built is lora.for_model(xl.unet)  # built once per model
    stored = {k: v.float() for k, v in load_file(path).items()}
    unet, control = xl.unet.model.state_dict(), built.module.state_dict()
    key = "down_blocks.1.attentions.0.proj_in.weight"
    ldm = convert.unet_ldm_names([key], {**xl.unet.model.config, "up_block_types": []})[key].removesuffix(".weight")
    delta = (stored[ldm + ".up"].flatten(1) @ stored[ldm + ".down"].flatten(1)).reshape(unet[key].shape)
    assert torch.allclose(control[key], unet[key] + delta, atol=1e-6)
    assert torch.equal(control["controlnet_mid_block.weight"], stored["middle_block_out.0.weight"])
    assert torch.equal(control["conv_in.bias"], stored["input_blocks.0.0.bias"])  # full tensors replace the model's
    pos, neg = conds(xl)
    pos = [[pos[0][0], {"pooled_output": torch.zeros(1, 64)}]]
    neg = [[neg[0][0], {"pooled_output": torch.zeros(1, 64)}]]
    steered = sample(xl, with_control(pos, Control(lora, hint())), neg)
    assert not torch.allclose(steered, sample(xl, pos, neg), atol=1e-4)


def test_shuffle_controlnets_average_their_residuals(root: Path, bases: dict[str, Path],
                                                     sd15: LoadedCheckpoint) -> None:
    shuffle = load_control_model(write_controlnet(root / "control_v11e_sd15_shuffle.safetensors", base=bases["sd15"]),
                                 precision="fp32")
    assert shuffle.global_pool
    residuals = Control(shuffle, hint()).residuals(call_for(sd15, conds(sd15)[0][0][0]),
                                                   sd15.unet.schedule.percent_to_sigma)
    for r in [*residuals.down, residuals.mid]:
        assert torch.allclose(r, r.mean(dim=(2, 3), keepdim=True).expand_as(r))
