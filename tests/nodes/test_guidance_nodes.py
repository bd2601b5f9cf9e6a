"""Guidance patch nodes: what each hook changes, on a clone, in ComfyUI's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.models import LoadedCheckpoint
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LATENT = {"samples": torch.zeros(1, 4, 8, 8)}


class Ctx:
    """A context that ignores progress."""

    node_id = "1"
    prompt_id = "p"
    extra_data = {"preview_method": "none"}

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Ignored."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path_factory.mktemp("nodes")), precision="fp32"))


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


def run(registry: NodeRegistry, name: str, **inputs: Any) -> Any:
    return registry[name].behaviour.execute(None, Ctx(), inputs)


def conds(seed: int) -> list[list[Any]]:
    return [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(seed)), {}]]


def sample(registry: NodeRegistry, model: Any, cfg: float = 4.0, sampler: str = "euler") -> torch.Tensor:
    (out,) = run(registry, "KSampler", model=model, seed=3, steps=3, cfg=cfg, sampler_name=sampler,
                 scheduler="karras", positive=conds(1), negative=conds(2), latent_image=LATENT, denoise=1.0)
    return out["samples"]


PATCHES: list[tuple[str, dict[str, Any]]] = [
    ("RescaleCFG", {"multiplier": 0.7}),
    ("CFGZeroStar", {}),
    ("CFGNorm", {"strength": 0.5}),
    ("Mahiro", {}),
    ("Epsilon Scaling", {"scaling_factor": 1.05}),
    ("TCFG", {}),
    ("APG", {"eta": 0.0, "norm_threshold": 5.0, "momentum": 0.5}),
    ("FreSca", {"scale_low": 1.0, "scale_high": 1.5, "freq_cutoff": 2}),
]


@pytest.mark.parametrize(("name", "options"), PATCHES)
def test_patch_changes_the_result_on_a_clone_only(registry: NodeRegistry, ckpt: LoadedCheckpoint, name: str,
                                                  options: dict[str, Any]) -> None:
    plain = sample(registry, ckpt.unet)
    (patched,) = run(registry, name, model=ckpt.unet, **options)
    assert patched is not ckpt.unet and ckpt.unet.options == {}
    result = sample(registry, patched)
    assert torch.isfinite(result).all() and not torch.allclose(result, plain, atol=1e-4)
    assert torch.equal(sample(registry, ckpt.unet), plain)  # the original MODEL is untouched


def test_rescale_cfg_at_zero_is_plain_cfg(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (patched,) = run(registry, "RescaleCFG", model=ckpt.unet, multiplier=0.0)
    torch.testing.assert_close(sample(registry, patched), sample(registry, ckpt.unet), rtol=1e-5, atol=1e-5)


def test_neutral_settings_are_plain_cfg(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    plain = sample(registry, ckpt.unet)
    (eps,) = run(registry, "Epsilon Scaling", model=ckpt.unet, scaling_factor=1.0)
    torch.testing.assert_close(sample(registry, eps), plain, rtol=1e-5, atol=1e-5)
    (fresca,) = run(registry, "FreSca", model=ckpt.unet, scale_low=1.0, scale_high=1.0, freq_cutoff=20)
    torch.testing.assert_close(sample(registry, fresca), plain, rtol=1e-5, atol=1e-5)


def test_patches_compose_in_order_and_removing_one_gives_the_rest(registry: NodeRegistry,
                                                                   ckpt: LoadedCheckpoint) -> None:
    (rescaled,) = run(registry, "RescaleCFG", model=ckpt.unet, multiplier=0.7)
    alone = sample(registry, rescaled)
    (both,) = run(registry, "CFGNorm", model=rescaled, strength=0.5)
    (both_again,) = run(registry, "Epsilon Scaling", model=both, scaling_factor=1.05)
    stacked = sample(registry, both_again)
    assert len(both_again.options["sampler_post_cfg_function"]) == 2 and len(both.options[
        "sampler_post_cfg_function"]) == 1 and "sampler_post_cfg_function" not in rescaled.options
    assert not torch.allclose(stacked, alone, atol=1e-4)
    assert torch.equal(sample(registry, rescaled), alone)  # without the later patches: bit for bit the same
    # Post-CFG hooks run in the order applied: CFGNorm then epsilon scaling differs from the reverse.
    (eps_first,) = run(registry, "Epsilon Scaling", model=rescaled, scaling_factor=1.05)
    (reverse,) = run(registry, "CFGNorm", model=eps_first, strength=0.5)
    assert not torch.equal(sample(registry, reverse), stacked)


def test_hooks_reach_cfg_pp_samplers_and_cfg_one(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (patched,) = run(registry, "CFGZeroStar", model=ckpt.unet)
    for sampler in ("euler_cfg_pp", "dpmpp_2m_cfg_pp"):
        result = sample(registry, patched, cfg=1.5, sampler=sampler)
        assert torch.isfinite(result).all()
        assert not torch.allclose(result, sample(registry, ckpt.unet, cfg=1.5, sampler=sampler), atol=1e-4)
    # At cfg 1 the negative pass is skipped; a post-CFG hook still runs (on zeros for the negative).
    (eps,) = run(registry, "Epsilon Scaling", model=ckpt.unet, scaling_factor=1.05)
    assert not torch.allclose(sample(registry, eps, cfg=1.0), sample(registry, ckpt.unet, cfg=1.0), atol=1e-4)


def _inpaint(registry: NodeRegistry, model: Any, mask: torch.Tensor) -> torch.Tensor:
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9)), "noise_mask": mask}
    (out,) = run(registry, "KSampler", model=model, seed=3, steps=3, cfg=4.0, sampler_name="euler",
                 scheduler="karras", positive=conds(1), negative=conds(2), latent_image=latent, denoise=1.0)
    return out["samples"]


def test_differential_diffusion_turns_a_soft_mask_into_a_schedule(registry: NodeRegistry,
                                                                  ckpt: LoadedCheckpoint) -> None:
    (patched,) = run(registry, "DifferentialDiffusion", model=ckpt.unet, strength=1.0)
    ones = torch.ones(1, 8, 8)
    assert torch.equal(_inpaint(registry, patched, ones), _inpaint(registry, ckpt.unet, ones))  # full mask: no change
    soft = torch.linspace(0, 1, 64).reshape(1, 8, 8)
    differential = _inpaint(registry, patched, soft)
    assert not torch.allclose(differential, _inpaint(registry, ckpt.unet, soft), atol=1e-4)
    (half,) = run(registry, "DifferentialDiffusion", model=ckpt.unet, strength=0.5)
    assert not torch.equal(_inpaint(registry, half, soft), differential)


def test_conditioning_set_timestep_range(registry: NodeRegistry, ckpt: LoadedCheckpoint) -> None:
    (ranged,) = run(registry, "ConditioningSetTimestepRange", conditioning=conds(1), start=0.5, end=1.0)
    assert ranged[0][1] == {"start_percent": 0.5, "end_percent": 1.0}
    (full,) = run(registry, "ConditioningSetTimestepRange", conditioning=conds(1), start=0.0, end=1.0)

    def with_positive(positive: Any) -> torch.Tensor:
        (out,) = run(registry, "KSampler", model=ckpt.unet, seed=3, steps=3, cfg=4.0, sampler_name="euler",
                     scheduler="karras", positive=positive, negative=conds(2), latent_image=LATENT, denoise=1.0)
        return out["samples"]

    assert torch.equal(with_positive(full), with_positive(conds(1)))
    # The positive is left out of the early steps: the result changes.
    assert not torch.allclose(with_positive(ranged), with_positive(conds(1)), atol=1e-4)
