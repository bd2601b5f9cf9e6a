"""Latent tool nodes on small latents with known answers: composites, arithmetic, batches, operations, files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion import latent_ops
from graph.executor import Executor
from graph.validate import validate_prompt
from nodes.api import Services
from nodes.folders import Folders
from nodes.latent_tools import (
    LatentAdd,
    LatentApplyOperation,
    LatentApplyOperationCFG,
    LatentBatch,
    LatentBatchSeedBehavior,
    LatentBlend,
    LatentComposite,
    LatentCompositeMasked,
    LatentCrop,
    LatentFlip,
    LatentInterpolate,
    LatentMultiply,
    LatentOperationSharpen,
    LatentOperationTonemapReinhard,
    LatentRotate,
    LatentSubtract,
    RebatchLatents,
)
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _filled(value: float, batch: int = 1, h: int = 4, w: int = 4) -> dict:
    return {"samples": torch.full((batch, 4, h, w), value)}


def test_composite_at_an_offset_crossing_the_edge() -> None:
    dest, source = _filled(0.0, h=4, w=4), _filled(1.0, h=3, w=3)
    out = LatentComposite(dest, source, x=16, y=8, feather=0)["samples"]  # latent (2, 1): 2 columns, 3 rows fit
    expected = torch.zeros(1, 4, 4, 4)
    expected[:, :, 1:4, 2:4] = 1.0
    assert torch.equal(out, expected)
    assert torch.equal(dest["samples"], torch.zeros(1, 4, 4, 4))  # the input is not changed


def test_composite_feather_fades_inner_edges_only() -> None:
    dest, source = _filled(0.0, h=8, w=8), _filled(1.0, h=4, w=4)
    out = LatentComposite(dest, source, x=0, y=0, feather=16)["samples"][0, 0]  # feather 2 latent pixels
    # Left and top edges lie on the image border: no fade there; right and bottom fade 1/2, 2/2.
    assert out[0, 0] == 1.0 and out[0, 3] == 0.5 and out[3, 3] == 0.25 and out[0, 2] == 1.0
    assert out[0, 4] == 0.0


def test_composite_masked_blends_through_the_mask_and_clips() -> None:
    dest, source = _filled(0.0, h=4, w=4), _filled(2.0, h=4, w=4)
    mask = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])  # resized bilinearly to the source's 4x4
    out = LatentCompositeMasked(dest, source, x=16, y=16, resize_source=False, mask=mask)["samples"][0, 0]
    assert torch.equal(out[:2, :], torch.zeros(2, 4)) and torch.equal(out[:, :2], torch.zeros(4, 2))
    assert out[2, 2] == 2.0  # mask 1 at the corner
    resized = LatentCompositeMasked(dest, _filled(3.0, h=2, w=2), x=0, y=0, resize_source=True)["samples"]
    assert torch.equal(resized, torch.full((1, 4, 4, 4), 3.0))


def test_composite_of_mismatched_batches_says_why() -> None:
    with pytest.raises(latent_ops.LatentShapeError, match="batch of 2"):
        LatentComposite(_filled(0.0, batch=3), _filled(1.0, batch=2), x=0, y=0, feather=0)
    with pytest.raises(latent_ops.LatentShapeError, match="channels"):
        LatentAdd(_filled(0.0), {"samples": torch.zeros(1, 16, 4, 4)})


def test_arithmetic_resizes_and_repeats_the_second_latent() -> None:
    a, b = _filled(3.0, batch=2, h=4, w=4), _filled(1.0, batch=1, h=2, w=2)
    assert torch.equal(LatentAdd(a, b)["samples"], torch.full((2, 4, 4, 4), 4.0))
    assert torch.equal(LatentSubtract(a, b)["samples"], torch.full((2, 4, 4, 4), 2.0))
    assert torch.equal(LatentMultiply(a, multiplier=-0.5)["samples"], torch.full((2, 4, 4, 4), -1.5))
    assert torch.allclose(LatentBlend(a, b, blend_factor=0.25)["samples"], torch.full((2, 4, 4, 4), 1.5))


def test_interpolate_mixes_directions_and_lengths() -> None:
    a = {"samples": torch.tensor([3.0, 0, 0, 0]).view(1, 4, 1, 1)}
    b = {"samples": torch.tensor([0.0, 1.0, 0, 0]).view(1, 4, 1, 1)}
    assert torch.equal(LatentInterpolate(a, b, ratio=1.0)["samples"], a["samples"])
    half = LatentInterpolate(a, b, ratio=0.5)["samples"].flatten()
    # Direction halfway between the two unit vectors, length halfway between 3 and 1.
    assert torch.allclose(half, torch.tensor([2 / 2 ** 0.5, 2 / 2 ** 0.5, 0, 0]), atol=1e-6)


def test_batch_and_seed_behaviour_keep_noise_indices() -> None:
    a, b = _filled(0.0, batch=2), {**_filled(1.0, batch=1, h=2, w=2), "batch_index": [7]}
    joined = LatentBatch(a, b)
    assert joined["samples"].shape == (3, 4, 4, 4) and joined["batch_index"] == [0, 1, 7]
    fixed = LatentBatchSeedBehavior(joined, seed_behavior="fixed")
    assert fixed["batch_index"] == [0, 0, 0]
    assert "batch_index" not in LatentBatchSeedBehavior(joined, seed_behavior="random")


def test_rebatch_regroups_by_size_and_batch_size() -> None:
    masked = {**_filled(1.0, batch=3), "noise_mask": torch.zeros(1, 1, 32, 32)}
    plain = _filled(0.0, batch=1)
    out = RebatchLatents([plain, masked, plain, _filled(2.0, batch=1, h=2, w=2)], batch_size=[2])
    assert [o["samples"].shape[0] for o in out] == [2, 2, 1, 1]  # 5 of one size, then 1 of another
    assert [o["batch_index"] for o in out] == [[0, 1], [2, 3], [4], [5]]
    assert [o["samples"][:, 0, 0, 0].tolist() for o in out] == [[0.0, 1.0], [1.0, 1.0], [0.0], [2.0]]
    assert out[0]["noise_mask"].shape == (2, 1, 32, 32)  # pixel size, ones where there was none
    assert out[0]["noise_mask"][0].mean() == 1.0 and out[0]["noise_mask"][1].mean() == 0.0
    assert "noise_mask" not in out[2] and out[3]["samples"].shape[-1] == 2


def test_crop_flip_and_rotate() -> None:
    grid = {"samples": torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 4, 1, 1)}
    crop = LatentCrop({"samples": torch.arange(144.0).view(1, 1, 12, 12)}, width=64, height=64, x=16, y=80)
    assert crop["samples"].shape == (1, 1, 8, 8) and crop["samples"][0, 0, 0, 0] == 4 * 12 + 2  # y kept 8 inside
    assert LatentFlip(grid, flip_method="x-axis: vertically")["samples"][0, 0, 0, 0] == 12
    assert LatentFlip(grid, flip_method="y-axis: horizontally")["samples"][0, 0, 0, 0] == 3
    clockwise = LatentRotate(grid, rotation="90 degrees")["samples"][0, 0]
    assert clockwise[0].tolist() == [12.0, 8.0, 4.0, 0.0]  # the left column becomes the top row
    assert torch.equal(LatentRotate(grid, rotation="none")["samples"], grid["samples"])


def test_latent_operations() -> None:
    flat = _filled(2.0, h=8, w=8)
    sharpened = LatentApplyOperation(flat, LatentOperationSharpen(sharpen_radius=2, sigma=1.0, alpha=0.5))
    assert torch.allclose(sharpened["samples"], flat["samples"], atol=1e-5)  # nothing to sharpen in a flat latent
    spike = torch.zeros(1, 4, 9, 9)
    spike[:, 0] = 1.0
    spike[:, 0, 4, 4] = 0.0
    spike[:, 1, 4, 4] = 1.0  # one pixel points another way
    out = LatentOperationSharpen(sharpen_radius=2, sigma=1.0, alpha=1.0)(latent=spike)
    assert out[0, 1, 4, 4] > 1.0 and torch.allclose(torch.linalg.vector_norm(out[0, :, 0, 0]), torch.tensor(1.0))
    tone = LatentOperationTonemapReinhard(multiplier=1.0)(latent=torch.randn(1, 4, 8, 8, generator=torch.Generator()
                                                                            .manual_seed(0)) * 5)
    assert tone.abs().max() < 5 * 4  # lengths squashed below the white point
    norms = torch.linalg.vector_norm(tone, dim=1)
    assert norms.max() < (norms.mean() + 5 * norms.std()) * 5


def test_apply_operation_cfg_adds_a_pre_cfg_hook_on_a_clone(tiny_sd15_path: Path) -> None:
    from diffusion.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_sd15_path).unet
    patched = LatentApplyOperationCFG(model, LatentOperationTonemapReinhard(multiplier=1.0))
    assert "sampler_pre_cfg_function" not in model.options
    (hook,) = patched.options["sampler_pre_cfg_function"]
    cond, uncond = torch.full((1, 4, 2, 2), 3.0), torch.ones(1, 4, 2, 2)
    new_cond, new_uncond = hook({"conds_out": [cond, uncond]})
    assert torch.equal(new_uncond, uncond)
    guidance = LatentOperationTonemapReinhard(multiplier=1.0)(latent=cond - uncond)
    assert torch.allclose(new_cond, guidance + uncond)


# -- through the engine: files and bad input ----------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(tmp_path)))


def _run(registry: NodeRegistry, prompt: dict) -> tuple[dict, object]:
    checked = validate_prompt(prompt, registry)
    assert checked.ok, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs, sink=lambda e, d: None)
    return result.outputs, result


def test_save_then_load_is_bit_for_bit(registry: NodeRegistry) -> None:
    from safetensors import safe_open

    samples = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    folders = registry.services.folders
    folders.input_dir.mkdir(parents=True, exist_ok=True)
    latent_ops.save_latent_file(folders.input_dir / "start.latent", samples)
    outputs, result = _run(registry, {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": "start.latent"}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "latents/test"}}})
    assert result.status == "success", result.error
    assert outputs["2"]["latents"] == [{"filename": "test_00001_.latent", "subfolder": "latents", "type": "output"}]
    written = folders.output_dir / "latents" / "test_00001_.latent"
    with safe_open(str(written), "pt") as f:
        assert set(f.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert '"LoadLatent"' in f.metadata()["prompt"]
        assert torch.equal(f.get_tensor("latent_tensor"), samples)
    assert torch.equal(latent_ops.load_latent_file(written), samples)
    assert not list(written.parent.glob(".*.part"))  # nothing half-written left beside it


def test_an_old_latent_file_is_unscaled(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"latent_tensor": torch.full((1, 4, 2, 2), 0.18215)}, str(tmp_path / "old.latent"))
    assert torch.allclose(latent_ops.load_latent_file(tmp_path / "old.latent"), torch.ones(1, 4, 2, 2))


def test_a_file_that_is_not_a_latent_gives_a_one_line_reason(registry: NodeRegistry) -> None:
    folders = registry.services.folders
    folders.input_dir.mkdir(parents=True, exist_ok=True)
    (folders.input_dir / "bad.latent").write_bytes(b"this is not safetensors")
    prompt = {"1": {"class_type": "LoadLatent", "inputs": {"latent": "bad.latent"}},
              "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}}
    _, result = _run(registry, prompt)
    assert result.status == "error"
    message = result.error["exception_message"]
    assert "bad.latent is not a .latent file" in message and "\n" not in message.strip()
    checked = validate_prompt({**prompt, "1": {"class_type": "LoadLatent", "inputs": {"latent": "gone.latent"}}},
                              registry)
    assert not checked.ok


def test_inpaint_inputs_grey_the_masked_pixels_and_grow_the_mask() -> None:
    pixels = torch.ones(1, 18, 20, 3)
    mask = torch.zeros(1, 18, 20)
    mask[0, 9, 10] = 1.0  # (8, 8) after the centred crop to 16x16 (offsets 1 and 2)
    out, noise_mask = latent_ops.inpaint_inputs(pixels, mask, grow_by=6)
    assert out.shape == (1, 16, 16, 3) and noise_mask.shape == (1, 1, 16, 16)
    assert out[0, 8, 8].tolist() == [0.5, 0.5, 0.5] and out[0, 8, 9].tolist() == [1.0, 1.0, 1.0]
    rows, cols = torch.nonzero(noise_mask[0, 0], as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 11, 6, 11)  # a 6x6 box: 3 before, 2 after
    _, ungrown = latent_ops.inpaint_inputs(pixels, mask, grow_by=0)
    assert int(ungrown.sum()) == 1
    with pytest.raises(latent_ops.LatentShapeError, match="batch of 2"):
        latent_ops.inpaint_inputs(torch.ones(3, 16, 16, 3), torch.zeros(2, 16, 16), 6)


def test_vae_encode_for_inpaint_node(tiny_sd15_path: Path) -> None:
    from diffusion.checkpoint import load_checkpoint
    from nodes.latent_tools import VAEEncodeForInpaint

    vae = load_checkpoint(tiny_sd15_path).vae
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:16, 8:16] = 1.0
    latent = VAEEncodeForInpaint(torch.rand(1, 36, 33, 3), vae, mask, grow_mask_by=0)
    assert latent["samples"].shape == (1, 4, 4, 4) and latent["noise_mask"].shape == (1, 1, 32, 32)


def test_apply_operation_cfg_changes_sampling_through_the_model(tiny_sd15_path: Path) -> None:
    from diffusion.checkpoint import load_checkpoint
    from diffusion.ksampler import ksample

    model = load_checkpoint(tiny_sd15_path, precision="fp32").unet
    g = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 64, generator=g), {}]]
    negative = [[torch.randn(1, 77, 64, generator=g), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def sample(m: object) -> torch.Tensor:
        return ksample(m, 7, 2, 4.0, "euler", "normal", positive, negative, latent)["samples"]

    plain = sample(model)
    identity = LatentApplyOperationCFG(model, LatentOperationSharpen(sharpen_radius=1, sigma=1.0, alpha=0.0))
    assert torch.allclose(sample(identity), plain, atol=1e-4)  # alpha 0 leaves the guidance as it is
    toned = LatentApplyOperationCFG(model, LatentOperationTonemapReinhard(multiplier=0.5))
    assert (sample(toned) - plain).abs().mean() > 1e-3
    assert torch.equal(sample(model), plain)  # the original MODEL was not patched
