"""Training loops: a few steps reproduce from the seed, latents are normalised, the file loads like SD1.5."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffusion.checkpoint import load_checkpoint
from diffusion.detect import detect
from diffusion.train import config, loops, shapes
from diffusion.train.export import ORIGIN, checkpoint_tensors, write_demo_checkpoint


@pytest.fixture(autouse=True)
def one_thread() -> None:
    # the loss curve is only reproducible for a fixed thread count
    torch.set_num_threads(1)


def _vae_run(seed: int) -> list[float]:
    torch.manual_seed(seed)
    vae = config.build_vae()
    log = loops.train_vae(vae, seed, steps=2, batch=2, full_steps=1, every=1)
    return [p["loss"] for p in log.points]


def test_vae_steps_repeat_from_the_seed() -> None:
    first, second, other = _vae_run(0), _vae_run(0), _vae_run(1)
    assert len(first) == 3
    assert first == second
    assert first != other


def test_vae_middle_attention_stays_the_identity() -> None:
    torch.manual_seed(0)
    vae = config.build_vae()
    loops.train_vae(vae, 0, steps=2, batch=2, full_steps=1, mixed_steps=1, every=1)
    for mid in (vae.encoder.mid_block, vae.decoder.mid_block):
        out = mid.attentions[0].to_out[0]
        assert not out.weight.any() and not out.bias.any()
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(vae.decoder.mid_block.attentions[0](x), x)


def test_mixed_latent_stage_trains_the_decoder_only_and_repeats() -> None:
    def run(mixed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        vae = config.build_vae()
        log = loops.train_vae(vae, 0, steps=1, batch=2, full_steps=1, mixed_steps=mixed, every=1)
        return [p["loss"] for p in log.points], {k: v.clone() for k, v in vae.state_dict().items()}

    (plain, before), (mixed, after), (again, _) = run(0), run(2), run(2)
    assert mixed == again and len(mixed) == len(plain) + 2
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])


def test_pasted_rectangles_follow_latent_cells() -> None:
    x = torch.stack([torch.zeros(1, 64, 64), torch.ones(1, 64, 64)])
    out = loops._paste_rectangles(x, 1.0, torch.Generator().manual_seed(0))
    for image, other in ((out[0], 1.0), (out[1], 0.0)):
        pasted = (image[0] == other).float()
        assert 0 < pasted.mean() < 1
        cells = pasted.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
        # every 8x8 cell is either wholly pasted or not at all
        assert set(cells.mean(dim=1).tolist()) <= {0.0, 1.0}


def _diffusion_run(seed: int, snr_gamma: float = 0.0) -> tuple[list[float], torch.Tensor]:
    torch.manual_seed(seed)
    text, unet = config.build_text_encoder(), config.build_unet()
    latents = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    captions = [s.caption for s in (shapes.describe(seed, i) for i in range(8))]
    log = loops.train_diffusion(unet, text, latents, captions, seed, steps=3, batch=4, snr_gamma=snr_gamma, every=1)
    return [p["loss"] for p in log.points], unet.conv_out.weight.detach().clone()


def test_diffusion_steps_repeat_from_the_seed_and_learn() -> None:
    (first, w1), (second, w2) = _diffusion_run(3), _diffusion_run(3)
    assert first == second and torch.equal(w1, w2)
    other, _ = _diffusion_run(4)
    assert first != other
    # an eps loss near 1 at the start: the UNet predicts roughly nothing of the unit-variance noise
    assert 0.5 < first[0] < 2.0


def test_min_snr_weighting_lowers_the_loss_of_clean_timesteps() -> None:
    (plain, _), (weighted, _), (again, _) = _diffusion_run(3), _diffusion_run(3, 5.0), _diffusion_run(3, 5.0)
    assert weighted == again
    # same batches and noise; the weights are <= 1, and < 1 wherever SNR > 5 (the 147 cleanest timesteps)
    assert weighted[0] < plain[0]


def test_normalised_latents_have_unit_spread_and_decode_the_same() -> None:
    torch.manual_seed(0)
    vae = config.build_vae()
    images, _ = shapes.make_batch(0, 0, 8)
    raw = loops.encode_latents(vae, images)
    with torch.no_grad():
        before = vae.decode(raw).sample
    scaled = loops.normalise_latents(vae, raw)
    assert torch.allclose(scaled, loops.encode_latents(vae, images), atol=1e-4)
    model_space = scaled * config.LATENT_SCALE
    assert torch.allclose(model_space.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(model_space.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)
    with torch.no_grad():
        after = vae.decode(scaled).sample
    assert torch.allclose(before, after, atol=1e-4)


def test_captions_tokenize_as_inference_does() -> None:
    ids = loops.CaptionTokens()(["a red circle on a blue background", ""])
    assert ids.shape == (2, 77)
    assert ids[0, 0] == 49406 and ids[1, 1] == 49407 and (ids[1, 2:] == 49407).all()
    assert (ids[0, 1:8] < 49406).all()


def test_exported_file_is_detected_and_loaded_as_sd1(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet, vae, text = config.build_unet(), config.build_vae(), config.build_text_encoder()
    tensors = checkpoint_tensors(unet, vae, text, torch.float32)
    layout = detect({k: tuple(v.shape) for k, v in tensors.items()})
    assert layout.arch == "sd1"
    for key, value in config.UNET_CONFIG.items():
        assert layout.unet_config[key] == value, key
    assert layout.vae_config == config.VAE_CONFIG
    assert {k: layout.text_encoders[0].config[k] for k in config.TEXT_CONFIG} == config.TEXT_CONFIG

    path = write_demo_checkpoint(tmp_path / "demo.safetensors", unet, vae, text, {"noodlebox.seed": "0"})
    loaded = load_checkpoint(path, precision="fp32")
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500])
    with torch.no_grad():
        context = text(loops.CaptionTokens()(["a red circle"])).last_hidden_state
        expected = unet(x, t, encoder_hidden_states=context).sample
        cond, _ = loaded.clip.encode("a red circle")
        got = loaded.unet.model(x, t, encoder_hidden_states=cond).sample
    # fp16 storage: the same network up to half-precision rounding of the weights
    assert torch.allclose(got, expected, atol=0.05)
    assert torch.allclose(cond, context, atol=0.05)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["noodlebox.origin"] == ORIGIN
        assert f.get_tensor("model.diffusion_model.out.2.weight").dtype == torch.float16


def test_loss_log_last_covers_steps_after_the_last_point() -> None:
    # the training log's final loss must exist when a stage runs fewer steps than the logging interval
    log = loops.LossLog(every=4)
    assert log.last is None
    for step, loss in enumerate([1.0, 3.0], start=1):
        log.add(step, loss, started=0.0)
    assert log.points == [] and log.last == 2.0
    for step, loss in enumerate([5.0, 7.0, 9.0], start=3):
        log.add(step, loss, started=0.0)
    assert [p["loss"] for p in log.points] == [4.0] and log.last == 9.0
