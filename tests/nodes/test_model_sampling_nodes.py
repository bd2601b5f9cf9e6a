"""GITSScheduler and ModelSamplingDiscrete's lcm and img_to_img types, run as nodes on a tiny SD1.5 UNet."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.denoiser import Denoiser
from diffusion.models import LoadedCheckpoint
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 4, 8, 8)


class Ctx:
    """An executor context that ignores progress."""

    node_id = "1"
    prompt_id = "p"
    extra_data = {"preview_method": "none"}

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Not recorded."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path_factory.mktemp("nodes")), precision="fp32"))


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


def run(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    """One node's outputs."""
    return registry[name].behaviour.execute(None, Ctx(), inputs)


def conds(seed: int) -> list[list[Any]]:
    return [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def unet_call(ckpt: LoadedCheckpoint, model_in: torch.Tensor, timestep: float, context: torch.Tensor) -> torch.Tensor:
    """The raw UNet output for an input and timestep chosen by the test."""
    with torch.no_grad():
        return ckpt.unet.model(model_in, torch.tensor([timestep]), encoder_hidden_states=context,
                               return_dict=False)[0]


def test_gits_scheduler_node(registry: NodeRegistry) -> None:
    (sigmas,) = run(registry, "GITSScheduler", coeff=1.20, steps=10, denoise=1.0)
    assert len(sigmas) == 11 and sigmas[0] == pytest.approx(14.61464119) and sigmas[1] == pytest.approx(5.85520077)
    assert sigmas[-1] == 0
    (empty,) = run(registry, "GITSScheduler", coeff=1.20, steps=10, denoise=0.0)
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="coeff"):
        run(registry, "GITSScheduler", coeff=0.83, steps=10, denoise=1.0)


def test_lcm_model_calls_the_unet_at_lcm_timesteps(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (lcm,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="lcm", zsnr=False)
    assert lcm is not ckpt.unet and len(lcm.schedule.sigmas) == 50 and len(ckpt.unet.schedule.sigmas) == 1000
    pos = conds(1)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)) * 3.0
    sigma = torch.tensor([3.0])
    denoised = Denoiser(lcm, pos, conds(2), 1.0, SHAPE)(x, sigma)
    # Sigma 3 is nearest to the kept timestep 679 (the plain table's own would be 673).
    eps = unet_call(ckpt, x / math.sqrt(3.0**2 + 1), 679.0, pos[0][0])
    t = 6790.0
    expected = t / math.sqrt(t * t + 0.25) * (x - eps * 3.0) + 0.25 / (t * t + 0.25) * x
    torch.testing.assert_close(denoised, expected, rtol=1e-5, atol=1e-5)
    plain = Denoiser(ckpt.unet, pos, conds(2), 1.0, SHAPE)(x, sigma)
    assert (denoised - plain).abs().max() > 1e-3


def test_lcm_model_samples_with_basic_scheduler(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (lcm,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="lcm", zsnr=False)
    (sigmas,) = run(registry, "BasicScheduler", model=lcm, scheduler="sgm_uniform", steps=4, denoise=1.0)
    assert len(sigmas) == 5 and sigmas[0] == pytest.approx(float(lcm.schedule.sigma_max), rel=1e-6)
    timesteps = lcm.schedule.timestep(sigmas[:-1])
    assert bool(((timesteps - 19) % 20 == 0).all()) and int(timesteps[0]) == 999
    (guider,) = run(registry, "CFGGuider", model=lcm, positive=conds(1), negative=conds(2), cfg=1.0)
    (noise,) = run(registry, "RandomNoise", noise_seed=7)
    (sampler,) = run(registry, "KSamplerSelect", sampler_name="lcm")
    out, _ = run(registry, "SamplerCustomAdvanced", noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                 latent_image={"samples": torch.zeros(SHAPE)})
    assert out["samples"].shape == SHAPE and bool(torch.isfinite(out["samples"]).all())


def test_img_to_img_model_feeds_the_unet_the_latent_and_returns_its_output(registry: NodeRegistry,
                                                                         ckpt: LoadedCheckpoint) -> None:
    (i2i,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="img_to_img", zsnr=False)
    pos = conds(1)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4)) * 3.0
    denoised = Denoiser(i2i, pos, conds(2), 1.0, SHAPE)(x, torch.tensor([3.0]))
    # No input scaling, the table's own timestep, and the output taken as the clean latent.
    torch.testing.assert_close(denoised, unet_call(ckpt, x, 673.0, pos[0][0]), rtol=1e-5, atol=1e-5)
    (zsnr,) = run(registry, "ModelSamplingDiscrete", model=ckpt.unet, sampling="img_to_img", zsnr=True)
    assert float(zsnr.schedule.sigma_max) == pytest.approx(4518.8, rel=1e-3)
