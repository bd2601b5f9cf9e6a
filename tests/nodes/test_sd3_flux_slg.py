"""SkipLayerGuidanceSD3 / DiT / DiTSimple on tiny synthetic SD3.5 and Flux models.

The skipped pass is checked against the same transformer with the block taken out of its
block list (no patch mechanism involved); scale 0 and a sigma outside the percent range
give the unpatched prediction bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from diffusion.denoiser import Denoiser
from diffusion.families import synthetic as fs
from diffusion.sampling.cfg import cfg_combine
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CFG = 2.5
SHAPE = (1, 16, 8, 8)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> NodeRegistry:
    root = tmp_path_factory.mktemp("sd3_flux_slg")
    for arch in ("sd35", "flux-schnell"):
        fs.write_part(root / "models" / "diffusion_models" / f"{arch}.safetensors", "diffusion_model", arch, seed=4)
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "models" / "checkpoints" / "sd15.safetensors").symlink_to(tiny_sd15_path)
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
    """Run a node as the executor does and return its first output."""
    return registry[name].behaviour.execute(None, _Ctx(), inputs)[0]


def load(registry: NodeRegistry, arch: str) -> Any:
    return call(registry, "UNETLoader", unet_name=f"{arch}.safetensors", weight_dtype="default")


def conditioning(model: Any, seed: int) -> list[list[Any]]:
    """One random text conditioning of the model's widths."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, 6, model.context_dim, generator=g)
    pooled = torch.randn(1, model.config["pooled_projection_dim"], generator=g)
    return [[cond, {"pooled_output": pooled}]]


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(SHAPE, generator=g), torch.tensor([0.6])


@contextmanager
def without_blocks(model: Any, double: Sequence[int] = (), single: Sequence[int] = ()) -> Iterator[None]:
    """The model's transformer with these blocks taken out of its block lists (the reference skip)."""
    inner = model.model
    saved = inner.transformer_blocks, getattr(inner, "single_transformer_blocks", None)
    inner.transformer_blocks = nn.ModuleList(b for i, b in enumerate(saved[0]) if i not in double)
    if saved[1] is not None:
        inner.single_transformer_blocks = nn.ModuleList(b for i, b in enumerate(saved[1]) if i not in single)
    try:
        yield
    finally:
        inner.transformer_blocks = saved[0]
        if saved[1] is not None:
            inner.single_transformer_blocks = saved[1]


def predictions(model: Any, pos: Any, neg: Any, x: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
    """The plain positive and negative denoised predictions."""
    return Denoiser(model, pos, neg, CFG, x.shape).predict(x, sigma, [0, 1])


def guided(model: Any, pos: Any, neg: Any, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """One CFG step of the denoiser, with the MODEL's hooks."""
    with torch.no_grad():
        return Denoiser(model, pos, neg, CFG, x.shape)(x, sigma)


@pytest.mark.parametrize(("arch", "node", "layers"), [
    ("sd35", "SkipLayerGuidanceSD3", {"layers": "1"}),
    ("sd35", "SkipLayerGuidanceDiT", {"double_layers": "0", "single_layers": "7, 8, 9"}),  # SD3: no singles
    ("flux-schnell", "SkipLayerGuidanceDiT", {"double_layers": "", "single_layers": "1"}),
    ("flux-schnell", "SkipLayerGuidanceDiT", {"double_layers": "0", "single_layers": "0,1"}),
])
def test_slg_adds_scale_times_cond_minus_the_skipped_pass(registry: NodeRegistry, inputs: Any, arch: str,
                                                         node: str, layers: dict[str, str]) -> None:
    model = load(registry, arch)
    x, sigma = inputs
    pos, neg = conditioning(model, 1), conditioning(model, 2)
    extra = {"rescaling_scale": 0.0} if node.endswith("DiT") else {}
    slg = call(registry, node, model=model, scale=3.0, start_percent=0.0, end_percent=1.0, **layers, **extra)
    assert slg is not model and not model.options  # the input MODEL is not changed
    with torch.no_grad():
        cond, uncond = predictions(model, pos, neg, x, sigma)
        double = [int(v) for v in layers.get("layers", layers.get("double_layers", "")).replace(",", " ").split()]
        single = [int(v) for v in layers.get("single_layers", "").replace(",", " ").split()] if arch != "sd35" else []
        with without_blocks(model, double, single):
            skipped = Denoiser(model, pos, [], 1.0, x.shape).predict(x, sigma, [0])[0]
    assert not torch.allclose(skipped, cond, atol=1e-4)  # the skipped layer changes the prediction
    expected = cfg_combine(cond, uncond, CFG) + (cond - skipped) * 3.0
    assert torch.allclose(guided(slg, pos, neg, x, sigma), expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["sd35", "flux-schnell"])
def test_scale_zero_and_outside_the_range_are_no_slg(registry: NodeRegistry, inputs: Any, arch: str) -> None:
    model = load(registry, arch)
    x, sigma = inputs
    pos, neg = conditioning(model, 1), conditioning(model, 2)
    plain = guided(model, pos, neg, x, sigma)
    zero = call(registry, "SkipLayerGuidanceDiT", model=model, double_layers="0", single_layers="1", scale=0.0,
                start_percent=0.0, end_percent=1.0, rescaling_scale=0.0)
    # sigma 0.6 lies before these percents' sigmas (0.9 -> ~0.25 for SD3's shift 3, lower for Flux)
    late = call(registry, "SkipLayerGuidanceDiT", model=model, double_layers="0", single_layers="1", scale=3.0,
                start_percent=0.9, end_percent=1.0, rescaling_scale=0.0)
    assert late.schedule.percent_to_sigma(0.9) < 0.6
    early = call(registry, "SkipLayerGuidanceSD3", model=model, layers="0", scale=3.0, start_percent=0.0,
                 end_percent=0.1)
    assert early.schedule.percent_to_sigma(0.1) > 0.6
    for patched in (zero, late, early):
        assert torch.equal(guided(patched, pos, neg, x, sigma), plain)
    simple_late = call(registry, "SkipLayerGuidanceDiTSimple", model=model, double_layers="0", single_layers="1",
                       start_percent=0.9, end_percent=1.0)
    assert torch.equal(guided(simple_late, pos, neg, x, sigma), plain)


def test_rescaling_scale_mixes_in_the_std_ratio(registry: NodeRegistry, inputs: Any) -> None:
    model = load(registry, "flux-schnell")
    x, sigma = inputs
    pos, neg = conditioning(model, 1), conditioning(model, 2)
    common = {"model": model, "double_layers": "0", "single_layers": "", "scale": 2.0, "start_percent": 0.0,
              "end_percent": 1.0}
    unscaled = guided(call(registry, "SkipLayerGuidanceDiT", **common, rescaling_scale=0.0), pos, neg, x, sigma)
    rescaled = guided(call(registry, "SkipLayerGuidanceDiT", **common, rescaling_scale=0.7), pos, neg, x, sigma)
    with torch.no_grad():
        cond = predictions(model, pos, neg, x, sigma)[0]
    factor = 0.7 * cond.std() / unscaled.std() + 0.3
    assert torch.allclose(rescaled, unscaled * factor, atol=1e-6)


@pytest.mark.parametrize(("arch", "double", "single"), [("sd35", [0], []), ("flux-schnell", [0], [1])])
def test_simple_skips_the_layers_in_the_negative_pass(registry: NodeRegistry, inputs: Any, arch: str,
                                                      double: list[int], single: list[int]) -> None:
    model = load(registry, arch)
    x, sigma = inputs
    pos, neg = conditioning(model, 1), conditioning(model, 2)
    simple = call(registry, "SkipLayerGuidanceDiTSimple", model=model, double_layers=str(double)[1:-1],
                  single_layers=str(single)[1:-1], start_percent=0.0, end_percent=1.0)
    with torch.no_grad():
        cond, uncond = predictions(model, pos, neg, x, sigma)
        with without_blocks(model, double, single):
            skipped_uncond = predictions(model, pos, neg, x, sigma)[1]
    assert not torch.allclose(skipped_uncond, uncond, atol=1e-4)
    assert torch.allclose(guided(simple, pos, neg, x, sigma), cfg_combine(cond, skipped_uncond, CFG), atol=1e-5)


def test_ksampler_with_slg(registry: NodeRegistry) -> None:
    model = load(registry, "sd35")
    pos, neg = conditioning(model, 1), conditioning(model, 2)

    def sample(m: Any) -> torch.Tensor:
        return call(registry, "KSampler", model=m, seed=3, steps=3, cfg=CFG, sampler_name="euler",
                    scheduler="simple", positive=pos, negative=neg, latent_image={"samples": torch.zeros(SHAPE)},
                    denoise=1.0)["samples"]

    plain = sample(model)
    slg = dict(model=model, layers="0", start_percent=0.0, end_percent=1.0)
    assert torch.equal(sample(call(registry, "SkipLayerGuidanceSD3", **slg, scale=0.0)), plain)
    assert not torch.allclose(sample(call(registry, "SkipLayerGuidanceSD3", **slg, scale=3.0)), plain, atol=1e-3)
    assert torch.equal(sample(model), plain)  # the base model runs as before afterwards


def test_bad_layers_and_models_are_one_line_errors(registry: NodeRegistry) -> None:
    flux = load(registry, "flux-schnell")
    with pytest.raises(ValueError, match=r"has 2 single_blocks .*no layer 5"):
        call(registry, "SkipLayerGuidanceDiT", model=flux, double_layers="0", single_layers="1, 5", scale=3.0,
             start_percent=0.0, end_percent=1.0, rescaling_scale=0.0)
    with pytest.raises(ValueError, match="has 2 double_blocks"):
        call(registry, "SkipLayerGuidanceSD3", model=load(registry, "sd35"), layers="7, 8, 9", scale=3.0,
             start_percent=0.0, end_percent=1.0)
    sd15 = call(registry, "CheckpointLoaderSimple", ckpt_name="sd15.safetensors")
    with pytest.raises(ValueError, match="works on SD3/SD3\\.5 and Flux models"):
        call(registry, "SkipLayerGuidanceDiTSimple", model=sd15, double_layers="1", single_layers="",
             start_percent=0.0, end_percent=1.0)
    # no layers at all: the model comes back as it is, as in ComfyUI
    assert call(registry, "SkipLayerGuidanceSD3", model=flux, layers="", scale=3.0, start_percent=0.0,
                end_percent=1.0) is flux
