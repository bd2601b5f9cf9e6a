"""unCLIP: SD2.1 unCLIP checkpoints, the noise-augmented image input, SDXL revision, and their nodes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DDPMScheduler

from diffusion.control.clip_vision import ClipVisionOutput
from diffusion.denoiser import Denoiser
from diffusion.synthetic import write_checkpoint
from diffusion.unclip import augment, image_adm, noise_schedule, unclip_input
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import NodeRegistry, build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_sd15_path: Path) -> Path:
    root = tmp_path_factory.mktemp("unclip")
    checkpoints = root / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_checkpoint(checkpoints / "unclip.safetensors", "sd2-unclip", "tiny", 0)
    write_checkpoint(checkpoints / "xl.safetensors", "sdxl", "tiny", 0)
    shutil.copy(tiny_sd15_path, checkpoints / "plain.safetensors")
    return root


@pytest.fixture(scope="module")
def registry(base: Path) -> NodeRegistry:
    return build_registry(Services(folders=Folders(base), precision="fp32"))


class _Ctx:
    node_id = "1"
    prompt_id = "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        """Nothing to report to."""

    def check_interrupted(self) -> None:
        """Never interrupted."""


def call(registry: NodeRegistry, node: str, **inputs: Any) -> tuple[Any, ...]:
    return registry[node].behaviour.execute(None, _Ctx(), inputs)


def output(width: int, rows: int = 1, seed: int = 0) -> ClipVisionOutput:
    embeds = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    return ClipVisionOutput(embeds[:, None], embeds[:, None], embeds)


IMAGE = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))


def test_schedule_is_squaredcos_cap_v2() -> None:
    keep, noise = noise_schedule()
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    assert torch.allclose(keep ** 2, reference, atol=1e-5) and torch.allclose(keep ** 2 + noise ** 2, torch.ones(1000))


def test_augment_by_hand() -> None:
    embeds = torch.randn(1, 16, generator=torch.Generator().manual_seed(3))
    noised, level = augment(embeds, 250, 7)
    keep, part = noise_schedule()
    noise = torch.randn(1, 16, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(noised, keep[250] * embeds + part[250] * noise)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(8) / 8)
    assert torch.allclose(level, torch.cat([torch.cos(250 * freqs), torch.sin(250 * freqs)])[None], atol=1e-5)


def test_one_image_is_noised_embedding_and_level_times_strength() -> None:
    out = output(16)
    item = {"clip_vision_output": out, "strength": 1.0, "noise_augmentation": 0.25}
    one = image_adm([item], seed=17, merge_noise=0.05)
    noised, level = augment(out.image_embeds, round(999 * 0.25), 7)  # the sampling seed minus 10
    assert torch.allclose(one, torch.cat([noised, level], dim=1))
    assert torch.allclose(image_adm([{**item, "strength": 2.5}], 17, 0.05), 2.5 * one)


def test_several_images_are_summed_then_noised_at_the_merge_level() -> None:
    a = {"clip_vision_output": output(16, seed=1), "strength": 1.0, "noise_augmentation": 0.0}
    b = {"clip_vision_output": output(16, seed=2), "strength": 0.5, "noise_augmentation": 0.5}
    summed = image_adm([a], 20, 0.05) + image_adm([b], 20, 0.05)
    noised, level = augment(summed[:, :16], round(999 * 0.05), 10)
    assert torch.allclose(image_adm([a, b], 20, 0.05), torch.cat([noised, level], dim=1))
    assert torch.equal(unclip_input({}, 32, 20), torch.zeros(1, 32))  # no image: zeros


def test_loader_gives_the_image_encoder_and_shares_the_checkpoint(registry: NodeRegistry) -> None:
    model, clip, vae, vision = call(registry, "unCLIPCheckpointLoader", ckpt_name="unclip.safetensors")
    assert model.variant == "unclip" and model.arch == "sd2" and model.prediction == "v"
    assert clip is not None and vae is not None and vision is not None
    (encoded,) = call(registry, "CLIPVisionEncode", clip_vision=vision, image=IMAGE, crop="center")
    assert model.adm_channels == 2 * encoded.image_embeds.shape[-1]
    simple = call(registry, "CheckpointLoaderSimple", ckpt_name="unclip.safetensors")
    assert simple[0] is model  # one load for both loaders
    assert call(registry, "unCLIPCheckpointLoader", ckpt_name="plain.safetensors")[3] is None


def test_conditioning_appends_and_steers_sampling(registry: NodeRegistry) -> None:
    model, clip, _vae, vision = call(registry, "unCLIPCheckpointLoader", ckpt_name="unclip.safetensors")
    (encoded,) = call(registry, "CLIPVisionEncode", clip_vision=vision, image=IMAGE, crop="center")
    (text,) = call(registry, "CLIPTextEncode", clip=clip, text="a cat")
    (negative,) = call(registry, "CLIPTextEncode", clip=clip, text="")
    assert call(registry, "unCLIPConditioning", conditioning=text, clip_vision_output=encoded, strength=0.0,
                noise_augmentation=0.0)[0] is text
    (once,) = call(registry, "unCLIPConditioning", conditioning=text, clip_vision_output=encoded, strength=1.0,
                   noise_augmentation=0.1)
    (twice,) = call(registry, "unCLIPConditioning", conditioning=once, clip_vision_output=encoded, strength=0.5,
                    noise_augmentation=0.0)
    assert "unclip_conditioning" not in text[0][1] and len(once[0][1]["unclip_conditioning"]) == 1
    assert [i["strength"] for i in twice[0][1]["unclip_conditioning"]] == [1.0, 0.5]
    (latent,) = call(registry, "EmptyLatentImage", width=64, height=64, batch_size=1)

    def sample(positive: list) -> torch.Tensor:
        return call(registry, "KSampler", model=model, seed=3, steps=2, cfg=4.0, sampler_name="euler",
                    scheduler="normal", positive=positive, negative=negative, latent_image=latent,
                    denoise=1.0)[0]["samples"]

    plain, steered = sample(text), sample(once)
    assert not torch.allclose(plain, steered, atol=1e-4) and torch.equal(sample(once), steered)
    with pytest.raises(ValueError, match="the image embedding is 8 wide; this unCLIP model reads 32"):
        bad = call(registry, "unCLIPConditioning", conditioning=text, clip_vision_output=output(8), strength=1.0,
                   noise_augmentation=0.0)[0]
        sample(bad)


def test_sdxl_revision_replaces_the_pooled_output(registry: NodeRegistry) -> None:
    model, clip, _vae = call(registry, "CheckpointLoaderSimple", ckpt_name="xl.safetensors")
    (text,) = call(registry, "CLIPTextEncode", clip=clip, text="a cat")
    width = text[0][1]["pooled_output"].shape[-1]
    image = output(width + 8)
    (revised,) = call(registry, "unCLIPConditioning", conditioning=text, clip_vision_output=image, strength=0.7,
                      noise_augmentation=0.2)
    denoiser = Denoiser(model, revised, text, 4.0, (1, 4, 8, 8), seed=11)
    pooled = denoiser.sides[0][0].extra["text_embeds"]
    expected = image_adm(revised[0][1]["unclip_conditioning"], 11, 0.0)[:, :width]
    assert torch.allclose(pooled, expected)
    assert torch.equal(denoiser.sides[1][0].extra["text_embeds"], text[0][1]["pooled_output"].float())
