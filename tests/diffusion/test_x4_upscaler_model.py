"""The SD x4 upscaler: detected by shapes, loaded with the facts not in the weights, its noise-level
conditioning as ComfyUI applies it, and an image four times the size out of a tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open

from diffusion import vae as vae_ops
from diffusion import x4_upscaler
from diffusion.checkpoint import TensorFile, load_checkpoint
from diffusion.denoiser import Denoiser
from diffusion.detect import detect
from diffusion.ksampler import ksample
from diffusion.save import save_checkpoint
from diffusion.synthetic import random_weights, write_checkpoint
from nodes.image_models import SD_4XUpscale_Conditioning

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEED = 5


@pytest.fixture(scope="module")
def x4_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("x4") / "x4.safetensors", "sd-x4-upscaler", "tiny", SEED,
                            torch.float32)


@pytest.fixture(scope="module")
def loaded(x4_path: Path):
    return load_checkpoint(x4_path, precision="fp32")


def test_detected_by_shapes_with_the_facts_comfyui_uses(x4_path: Path, loaded) -> None:
    with TensorFile(x4_path) as file:
        layout = detect(file.shapes)
        assert file.shapes["model.diffusion_model.label_emb.weight"] == (1000, 128)
        assert file.shapes["first_stage_model.encoder.down.2.block.0.conv1.weight"][0] == 32
        assert "first_stage_model.encoder.down.3.block.0.conv1.weight" not in file.shapes  # 3 levels: x4
    assert (layout.arch, layout.variant) == ("sd2", "x4_upscaler")
    config = layout.unet_config
    assert config["in_channels"] == 7 and config["num_class_embeds"] == 1000 and config["attention_head_dim"] == 8
    assert config["only_cross_attention"][1:] == [True, False]  # level 0 has no attention
    assert loaded.prediction == loaded.unet.prediction == "v"
    assert loaded.unet.latent_scale == loaded.vae.scale_factor == 0.08333
    betas = np.linspace(0.0001**0.5, 0.02**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1 - betas)
    expected = torch.from_numpy(((1 - abar) / abar) ** 0.5).float()
    assert torch.equal(loaded.unet.schedule.sigmas, expected)
    assert loaded.clip.kind == "sd2"


@torch.no_grad()
def test_the_unet_round_trip_is_exact_with_the_class_embedding(loaded) -> None:
    spec = x4_upscaler.synthetic_spec("tiny")
    reference = UNet2DConditionModel(**spec.unet)
    reference.load_state_dict(random_weights(spec, SEED)["unet"], strict=True)
    reference.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    inputs = {"sample": torch.randn(2, 7, 8, 8, generator=g), "timestep": torch.tensor([900, 20]),
              "encoder_hidden_states": torch.randn(2, 5, 64, generator=g), "class_labels": torch.tensor([0, 300])}
    expected = reference(**inputs).sample
    assert torch.equal(loaded.unet.model(**inputs).sample, expected)
    other = dict(inputs, class_labels=torch.tensor([5, 5]))
    assert not torch.allclose(loaded.unet.model(**other).sample, expected)  # the label reaches the UNet


def test_resaving_gives_the_same_tensors(x4_path: Path, loaded, tmp_path: Path) -> None:
    out = save_checkpoint(tmp_path / "again.safetensors", loaded.unet, loaded.clip, loaded.vae, {})
    with safe_open(str(x4_path), "pt") as a, safe_open(str(out), "pt") as b:
        # SD2's unused text projection is not kept by the loader (as for any SD2 checkpoint)
        assert set(a.keys()) - set(b.keys()) == {"cond_stage_model.model.text_projection"}
        assert set(b.keys()) <= set(a.keys())
        for key in b.keys():  # noqa: SIM118
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


def test_noise_augmentation_closed_form() -> None:
    assert [x4_upscaler.noise_level(a) for a in (0.0, 0.1, 0.5, 1.0)] == [0, 35, 175, 350]
    image = torch.rand(1, 3, 6, 6) * 2 - 1
    level, seed = 175, 33
    betas = np.linspace(1e-2, 0.02**0.5, 1000, dtype=np.float64) ** 2
    abar = torch.from_numpy(np.cumprod(1 - betas))
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))
    expected = abar.sqrt().float()[level] * image + (1 - abar).sqrt().float()[level] * noise
    assert torch.allclose(x4_upscaler.augment(image, level, seed), expected, atol=1e-6)
    low = torch.rand(1, 3, 4, 4)
    plain, zero = x4_upscaler.unet_inputs({"concat_image": low}, (1, 4, 8, 8), 99)
    assert zero == 0 and plain.shape == (1, 3, 8, 8)
    noised, half = x4_upscaler.unet_inputs({"concat_image": low, "noise_augmentation": 0.5}, (1, 4, 8, 8), 99)
    assert half == 175 and torch.allclose(noised, x4_upscaler.augment(plain, 175, 89), atol=1e-6)  # seed - 10
    blank, _ = x4_upscaler.unet_inputs({}, (2, 4, 8, 8), 0)
    assert torch.equal(blank, torch.zeros(2, 3, 8, 8))


def test_the_denoiser_gives_each_entry_its_image_and_noise_level(loaded) -> None:
    image = torch.rand(1, 3, 4, 4)
    positive = [[torch.zeros(1, 3, 64), {"concat_image": image, "noise_augmentation": 0.2}]]
    negative = [[torch.zeros(1, 3, 64), {}]]
    denoiser = Denoiser(loaded.unet, positive, negative, 4.0, (2, 4, 8, 8), seed=12)
    pos, neg = denoiser.sides[0][0], denoiser.sides[1][0]
    expected, _ = x4_upscaler.unet_inputs(positive[0][1], (2, 4, 8, 8), 12)
    assert torch.equal(pos.concat, expected.repeat(2, 1, 1, 1)) and int(pos.extra["class_labels"]) == 70
    assert torch.equal(neg.concat, torch.zeros(2, 3, 8, 8)) and int(neg.extra["class_labels"]) == 0
    out = denoiser(torch.randn(2, 4, 8, 8), torch.tensor([3.0, 3.0]))
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_a_tiny_upscale_gives_an_image_four_times_the_size(loaded) -> None:
    cond, _ = loaded.clip.encode("a photo")
    uncond, _ = loaded.clip.encode("")
    image = torch.rand(1, 12, 16, 3)

    def run(noise_augmentation: float) -> torch.Tensor:
        positive, negative, latent = SD_4XUpscale_Conditioning(image, [[cond, {}]], [[uncond, {}]], 4.0,
                                                               noise_augmentation)
        assert latent["samples"].shape == (1, 4, 12, 16)
        return ksample(loaded.unet, 7, 2, 5.0, "euler", "normal", positive, negative, latent)["samples"]

    samples = run(0.0)
    pixels = vae_ops.decode(loaded.vae, samples)
    assert pixels.shape == (1, 48, 64, 3) and torch.isfinite(pixels).all()
    assert not torch.allclose(run(0.3), samples)  # the noise level and the noised image change the result


def test_the_graph_from_checkpoint_loader_to_decode_upscales_by_four(x4_path: Path, tmp_path: Path) -> None:
    from graph.executor import Executor
    from graph.validate import validate_prompt
    from nodes.api import Services
    from nodes.folders import Folders
    from nodes.registry import build_registry

    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "x4.safetensors").symlink_to(x4_path)
    registry = build_registry(Services(folders=Folders(tmp_path), precision="fp32"))
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x4.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "sharp", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 1, "color": 0xCC3311}},
        "5": {"class_type": "SD_4XUpscale_Conditioning", "inputs": {
            "images": ["4", 0], "positive": ["2", 0], "negative": ["3", 0], "scale_ratio": 4.0,
            "noise_augmentation": 0.2}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["5", 0], "negative": ["5", 1], "latent_image": ["5", 2], "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "x4"}},
    }
    checked = validate_prompt(prompt, registry)
    assert checked.ok and not checked.node_errors, checked.node_errors
    result = Executor(registry).run(checked.prompt, "p", checked.outputs)
    assert result.status == "success", result.error
    from PIL import Image

    (saved,) = (tmp_path / "output").glob("x4_*.png")
    assert Image.open(saved).size == (96, 64)
