"""SD3 ControlNets on a tiny synthetic SD3.5 checkpoint: ControlNetLoader detects them by shape,
ControlNetApplySD3 VAE-encodes the hint, and the residuals reach the transformer's blocks as ComfyUI adds them."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from diffusion.control.sd3 import SD3ControlCall, block_residuals
from diffusion.denoiser import Denoiser
from diffusion.families import sd3
from diffusion.families import synthetic as fs
from diffusion.vae import encode
from nodes.api import Services
from nodes.folders import Folders
from nodes.model_tools import make_model
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 16, 8, 8)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    root = tmp_path_factory.mktemp("sd3_controlnet")
    models = root / "models"
    base = fs.write_checkpoint(models / "checkpoints" / "sd35.safetensors", "sd35", seed=6)
    fs.write_part(models / "diffusion_models" / "flux.safetensors", "diffusion_model", "flux-schnell", seed=6)
    make_model("sd3-controlnet", models / "controlnet" / "sd3_cn.safetensors", base=base, seed=1)
    return build_registry(Services(folders=Folders(root), precision="fp32"))


class _Ctx:
    """A bare executor context for calling a node directly."""

    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


def call(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    return registry[name].behaviour.execute(None, _Ctx(), inputs)


@pytest.fixture(scope="module")
def loaded(registry: NodeRegistry) -> dict[str, Any]:
    model, clip, vae = call(registry, "CheckpointLoaderSimple", ckpt_name="sd35.safetensors")
    (control_net,) = call(registry, "ControlNetLoader", control_net_name="sd3_cn.safetensors")
    (pos,) = call(registry, "CLIPTextEncode", clip=clip, text="a lighthouse")
    (neg,) = call(registry, "CLIPTextEncode", clip=clip, text="")
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    return {"model": model, "vae": vae, "control_net": control_net, "pos": pos, "neg": neg, "hint": hint}


def apply(registry: NodeRegistry, loaded: dict[str, Any], **overrides: Any) -> tuple[Any, Any]:
    inputs = {"positive": loaded["pos"], "negative": loaded["neg"], "control_net": loaded["control_net"],
              "vae": loaded["vae"], "image": loaded["hint"], "strength": 0.8, "start_percent": 0.0,
              "end_percent": 1.0, **overrides}
    return call(registry, "ControlNetApplySD3", **inputs)


def test_the_loader_detects_an_sd3_controlnet(loaded: dict[str, Any]) -> None:
    control_net = loaded["control_net"]
    assert control_net.arch == "sd3" and isinstance(control_net.module, SD3ControlCall)
    assert control_net.module.net.config.num_layers == 1 and control_net.block_channels == (128,)


def test_block_residuals_spread_as_comfyui() -> None:
    outs = [torch.full((1,), float(k)) for k in range(3)]
    # depth 8, 3 blocks: 8 // 3 = 2 transformer blocks each, the last one fewer; zeros after
    spread = [float(r) for r in block_residuals(outs, 8)]
    assert spread[:5] == [0, 0, 1, 1, 2] and len(spread) == 8 and spread[5:] == [0, 0, 0]
    assert [float(r) for r in block_residuals(outs[:1], 2)] == [0, 0]


def test_one_step_adds_the_vae_encoded_hints_residuals(registry: NodeRegistry, loaded: dict[str, Any]) -> None:
    model, vae = loaded["model"], loaded["vae"]
    positive, _ = apply(registry, loaded)
    g = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(SHAPE, generator=g), torch.tensor([0.7])
    with torch.no_grad():
        got = Denoiser(model, positive, [], 1.0, SHAPE).predict(x, sigma, [0])[0]
        plain = Denoiser(model, loaded["pos"], [], 1.0, SHAPE).predict(x, sigma, [0])[0]
        # by hand: diffusers' SD3ControlNetModel on SD3 latents of the hint, zero pooled vector
        net = loaded["control_net"].module.net
        latent = (encode(vae, loaded["hint"]) - sd3.VAE_SHIFT) * sd3.VAE_SCALE
        cond, options = loaded["pos"][0]
        timestep = model.schedule.timestep(sigma)
        (outs,) = net(hidden_states=x, controlnet_cond=latent, encoder_hidden_states=cond,
                      pooled_projections=torch.zeros(1, 128), timestep=timestep, return_dict=False)
        assert len(outs) == 1
        with model.use() as wrapper:
            velocity = wrapper.inner(hidden_states=x, timestep=timestep, encoder_hidden_states=cond,
                                     pooled_projections=options["pooled_output"],
                                     block_controlnet_hidden_states=[outs[0] * 0.8, torch.zeros_like(outs[0])]).sample
        expected = model.schedule.calculate_denoised(sigma, velocity, x)
    assert not torch.allclose(got, plain, atol=1e-4)
    assert torch.allclose(got, expected, atol=1e-5)


def test_strength_zero_and_outside_the_range_change_nothing(registry: NodeRegistry, loaded: dict[str, Any]) -> None:
    positive, negative = apply(registry, loaded, strength=0.0)
    assert positive is loaded["pos"] and negative is loaded["neg"]
    late, _ = apply(registry, loaded, start_percent=0.9, end_percent=1.0)
    x, sigma = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)), torch.tensor([0.7])
    with torch.no_grad():
        assert torch.equal(Denoiser(loaded["model"], late, [], 1.0, SHAPE).predict(x, sigma, [0])[0],
                           Denoiser(loaded["model"], loaded["pos"], [], 1.0, SHAPE).predict(x, sigma, [0])[0])


def test_ksampler_with_an_sd3_controlnet(registry: NodeRegistry, loaded: dict[str, Any]) -> None:
    def sample(pos: Any, neg: Any) -> torch.Tensor:
        (out,) = call(registry, "KSampler", model=loaded["model"], seed=2, steps=2, cfg=2.0, sampler_name="euler",
                      scheduler="simple", positive=pos, negative=neg, latent_image={"samples": torch.zeros(SHAPE)},
                      denoise=1.0)
        return out["samples"]

    plain = sample(loaded["pos"], loaded["neg"])
    controlled = sample(*apply(registry, loaded))
    assert torch.isfinite(controlled).all() and not torch.allclose(controlled, plain, atol=1e-3)
    # ControlNetApplyAdvanced with its vae input is the same node
    advanced = call(registry, "ControlNetApplyAdvanced", positive=loaded["pos"], negative=loaded["neg"],
                    control_net=loaded["control_net"], image=loaded["hint"], strength=0.8, start_percent=0.0,
                    end_percent=1.0, vae=loaded["vae"])
    assert torch.equal(sample(*advanced), controlled)


def test_bad_uses_are_one_line_errors(registry: NodeRegistry, loaded: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="needs a VAE"):
        call(registry, "ControlNetApplyAdvanced", positive=loaded["pos"], negative=loaded["neg"],
             control_net=loaded["control_net"], image=loaded["hint"], strength=1.0, start_percent=0.0,
             end_percent=1.0)
    (flux,) = call(registry, "UNETLoader", unet_name="flux.safetensors", weight_dtype="default")
    positive, _ = apply(registry, loaded)
    with pytest.raises(ValueError, match="does not fit this flux model"):
        Denoiser(flux, positive, [], 1.0, SHAPE)
