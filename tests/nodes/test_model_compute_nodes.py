"""Continuous model sampling (EDM, V), compute precision and torch.compile on a MODEL clone."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffusion.ksampler import ksample
from diffusion.sampling.continuous import ContinuousSchedule
from diffusion.unet_patches.compute import compiled
from nodes import model_sampling as M

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_sd15_path: Path):
    from diffusion.checkpoint import load_checkpoint

    return load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))


def _sample(unet, clip) -> torch.Tensor:
    cond, pooled = clip.encode("a red circle")
    positive = [[cond, {"pooled_output": pooled}]]
    negative = [[clip.encode("")[0], {"pooled_output": pooled}]]
    return ksample(unet, 2, 3, 4.0, "euler", "karras", positive, negative,
                   {"samples": torch.zeros(1, 4, 8, 8)})["samples"]


def test_continuous_schedules_are_the_closed_forms() -> None:
    edm = ContinuousSchedule(0.002, 120.0, "edm", "edm", 0.5)
    sigma = torch.tensor([0.5, 3.0])
    torch.testing.assert_close(edm.timestep(sigma), 0.25 * sigma.log())
    torch.testing.assert_close(edm.sigma(edm.timestep(sigma)), sigma)
    assert float(edm.sigma_min) == pytest.approx(0.002) and float(edm.sigma_max) == pytest.approx(120.0, rel=1e-5)
    assert edm.percent_to_sigma(0.0) > 1e8 and edm.percent_to_sigma(1.0) == 0.0
    assert edm.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.002 * 120.0))
    x, out, s = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0), torch.tensor([3.0])
    want = 1 * 0.25 / (9 + 0.25) + 2 * 3 * 0.5 / math.sqrt(9 + 0.25)
    assert float(edm.calculate_denoised(s, out, x)) == pytest.approx(want)
    v = ContinuousSchedule(0.03, 500.0, "v", "v")
    torch.testing.assert_close(v.timestep(sigma), sigma.atan() / math.pi * 2)
    assert float(v.calculate_denoised(s, out, x)) == pytest.approx(1 / 10 - 2 * 3 / math.sqrt(10))
    with pytest.raises(ValueError, match="sigma_min"):
        ContinuousSchedule(5.0, 1.0)


def test_continuous_model_sampling_nodes(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    edm = M.ModelSamplingContinuousEDM(unet, "edm", 120.0, 0.002)
    out = _sample(edm, clip)
    assert torch.isfinite(out).all() and not torch.equal(out, plain)
    assert isinstance(M.ModelSamplingContinuousV(unet, "v_prediction", 500.0, 0.03).schedule, ContinuousSchedule)
    assert torch.equal(_sample(unet, clip), plain)  # the input MODEL keeps its schedule
    with pytest.raises(ValueError, match="not supported yet"):
        M.ModelSamplingContinuousEDM(unet, "edm_playground_v2.5", 120.0, 0.002)


def test_compute_dtype(loaded) -> None:
    unet, clip = loaded.unet, loaded.clip
    plain = _sample(unet, clip)
    assert torch.equal(_sample(M.ModelComputeDtype(unet, "default"), clip), plain)
    assert torch.equal(_sample(M.ModelComputeDtype(unet, "fp32"), clip), plain)
    bf16 = _sample(M.ModelComputeDtype(unet, "bf16"), clip)
    assert not torch.equal(bf16, plain) and float((bf16 - plain).norm() / plain.norm()) < 0.05


def test_torch_compile_falls_back_to_eager_when_it_cannot_compile(loaded, caplog: pytest.LogCaptureFixture) -> None:
    module = torch.nn.Linear(2, 2)
    assert compiled(module, None) is module
    assert compiled(module, "no-such-backend") is module
    assert "cannot compile" in caplog.text
    patched = M.TorchCompileModel(loaded.unet, "cudagraphs")  # no CUDA here: a warning, the model unchanged
    assert "torch_compile_backend" not in patched.options or torch.cuda.is_available()


def test_perp_neg_at_zero_scale_is_cfg_against_the_empty_prompt(loaded) -> None:
    from nodes.guidance import PerpNeg

    unet, clip = loaded.unet, loaded.clip

    def encode(text: str) -> list:
        cond, pooled = clip.encode(text)
        return [[cond, {"pooled_output": pooled}]]

    positive, negative, empty = encode("a red circle"), encode("a blue square"), encode("")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    patched = PerpNeg(unet, empty, 0.0)
    got = ksample(patched, 2, 3, 4.0, "euler", "normal", positive, negative, latent)["samples"]
    want = ksample(unet, 2, 3, 4.0, "euler", "normal", positive, empty, latent)["samples"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
    strong = ksample(PerpNeg(unet, empty, 1.0), 2, 3, 4.0, "euler", "normal", positive, negative, latent)["samples"]
    assert not torch.allclose(strong, want) and unet.options == {}
