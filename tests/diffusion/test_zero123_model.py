"""Stable Zero123: the file's layout read by shape, the camera and image conditioning in closed form,
cc_projection applied by the sampler, and image-only checkpoints saved and read back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffusion.checkpoint import CheckpointError, TensorFile
from diffusion.denoiser import Denoiser
from diffusion.detect import detect
from diffusion.ksampler import ksample
from diffusion.synthetic import write_checkpoint
from diffusion.zero123 import (
    CLIP_VISION_PREFIX,
    camera_embedding,
    conditioning,
    load_image_only,
    save_image_only,
    view_angles,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.fixture(scope="module")
def zero123_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("zero123") / "zero123.safetensors", "zero123", "tiny", 3,
                            torch.float32)


@pytest.fixture(scope="module")
def parts(zero123_path: Path):
    return load_image_only(zero123_path, precision="fp32")


def test_the_published_layout_is_detected_by_shape(zero123_path: Path) -> None:
    with TensorFile(zero123_path) as file:
        layout = detect(file.shapes)
        assert file.shapes["cc_projection.weight"] == (64, 68)  # image embeds (64) + camera (4) -> context (64)
        assert CLIP_VISION_PREFIX + "transformer.resblocks.0.attn.in_proj_weight" in file.shapes  # OpenCLIP's
        assert CLIP_VISION_PREFIX + "proj" in file.shapes
    assert (layout.arch, layout.variant) == ("sd1", "zero123")
    assert layout.unet_config["in_channels"] == 8 and layout.text_encoders == []


def test_camera_embedding_closed_form() -> None:
    got = camera_embedding(30.0, 90.0)
    assert got.shape == (1, 1, 4)
    expected = torch.tensor([-math.pi / 6, 1.0, math.cos(math.pi / 2), math.pi / 2])
    assert torch.allclose(got.flatten(), expected, atol=1e-6)
    assert torch.allclose(camera_embedding(-10.0, -45.0).flatten(),
                          torch.tensor([math.radians(10), -math.sqrt(0.5), math.sqrt(0.5), math.pi / 2]), atol=1e-6)


def test_conditioning_closed_form() -> None:
    embeds, latent = torch.randn(1, 64), torch.randn(1, 4, 8, 8)
    positive, negative = conditioning(embeds, latent, [(20.0, 40.0)], batched=False)
    cond = positive[0][0]
    assert cond.shape == (1, 1, 68)
    assert torch.equal(cond[..., :64], embeds.unsqueeze(0)) and torch.equal(cond[..., 64:], camera_embedding(20, 40))
    assert positive[0][1]["concat_latent_image"] is latent
    assert torch.equal(negative[0][0], torch.zeros(1, 1, 64))
    assert torch.equal(negative[0][1]["concat_latent_image"], torch.zeros_like(latent))
    views = view_angles(10.0, 0.0, 3, 5.0, 90.0)
    assert views == [(10.0, 0.0), (15.0, 90.0), (20.0, 180.0)]
    batched, _ = conditioning(embeds, latent, views, batched=True)
    assert batched[0][0].shape == (3, 1, 68)
    for i, (e, a) in enumerate(views):
        assert torch.equal(batched[0][0][i, :, 64:], camera_embedding(e, a)[0])
        assert torch.equal(batched[0][0][i, :, :64], embeds)


def test_loads_model_image_encoder_and_vae(parts) -> None:
    unet, vision, vae = parts
    assert unet.variant == "zero123" and unet.in_channels == 8 and unet.prediction == "eps"
    assert unet.context_projection.weight.shape == (64, 68)
    assert vision.image_size == 56 and vision.model.config.projection_dim == 64
    assert vae.scale_factor == 0.18215


def test_the_sampler_projects_the_context_and_takes_the_latent_unscaled(parts) -> None:
    unet, _, _ = parts
    embeds, latent = torch.randn(1, 64), torch.randn(1, 4, 8, 8)
    positive, negative = conditioning(embeds, latent, [(0.0, 30.0)], batched=False)
    denoiser = Denoiser(unet, positive, negative, 3.0, (1, 4, 8, 8))
    pos, neg = denoiser.sides[0][0], denoiser.sides[1][0]
    projection = unet.context_projection
    expected = positive[0][0] @ projection.weight.T + projection.bias
    assert pos.context.shape == (1, 1, 64) and torch.allclose(pos.context, expected, atol=1e-5)
    assert torch.equal(neg.context, torch.zeros(1, 1, 64))  # 64 wide already: not projected, as in ComfyUI
    assert torch.equal(pos.concat, latent) and torch.equal(neg.concat, torch.zeros(1, 4, 8, 8))
    out = ksample(unet, 1, 2, 3.0, "euler", "normal", positive, negative, {"samples": torch.zeros(1, 4, 8, 8)})
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()


def test_image_only_save_and_load_round_trip(parts, tmp_path: Path) -> None:
    unet, vision, vae = parts
    out = save_image_only(tmp_path / "saved.safetensors", unet, vision, vae, {"prompt": "{}"})
    saved = _tensors(out)
    assert CLIP_VISION_PREFIX + "vision_model.encoder.layers.0.self_attn.q_proj.weight" in saved  # ComfyUI's way
    again = load_image_only(out, precision="fp32")
    for a, b in zip((unet.model, vision.model, vae.model, unet.context_projection),
                    (again[0].model, again[1].model, again[2].model, again[0].context_projection), strict=True):
        first, second = a.state_dict(), b.state_dict()
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)
    resaved = _tensors(save_image_only(tmp_path / "again.safetensors", *again, {}))
    assert resaved.keys() == saved.keys() and all(torch.equal(resaved[k], saved[k]) for k in saved)


def test_a_checkpoint_without_an_image_encoder_is_refused(tiny_sd15_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no CLIP vision model in the file"):
        load_image_only(tiny_sd15_path, precision="fp32")
