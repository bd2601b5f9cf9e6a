"""SD3.5 / Flux synthetic files in the real key layouts, configs from shapes, and the key maps both ways."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
from diffusers.loaders import single_file_utils as sfu
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion.checkpoint import CheckpointError
from diffusion.families import flow, flux, loader, sd3
from diffusion.families import synthetic as fs
from diffusion.families.keymap import to_diffusers, to_original
from diffusion.sampling.schedulers import calculate_sigmas
from server.cli import main


@pytest.fixture(scope="module")
def parts() -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    torch.set_num_threads(1)
    return {arch: fs.original_parts(fs.transformer_spec(arch), seed=0) for arch in fs.ARCHS}


def _family(arch: str) -> ModuleType:
    return sd3 if arch == "sd35" else flux


@pytest.mark.parametrize("arch", fs.ARCHS)
def test_config_from_shapes_gives_back_the_spec(arch: str, parts) -> None:
    spec = fs.transformer_spec(arch)
    shapes = {sd3.PREFIX + k: v.shape for k, v in parts[arch]["diffusion_model"].items()}
    config = _family(arch).config_from_shapes(shapes)
    assert config == {**spec.transformer, **({"dual_attention_layers": (0,)} if arch == "sd35" else {})}


@pytest.mark.parametrize("arch", fs.ARCHS)
def test_original_keys_load_strictly_into_diffusers(arch: str, parts) -> None:
    state = parts[arch]["diffusion_model"]
    config = _family(arch).config_from_shapes({sd3.PREFIX + k: v.shape for k, v in state.items()})
    cls = SD3Transformer2DModel if arch == "sd35" else FluxTransformer2DModel
    model = cls(**config)
    model.load_state_dict(to_diffusers(state, _family(arch).key_rules(config)), strict=True)
    # ... and the way back gives the same file tensors, bit for bit.
    again = to_original(model.state_dict(), _family(arch).key_rules(config))
    assert set(again) == set(state)
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_sd3_map_agrees_with_diffusers_own_converter(parts) -> None:
    state = parts["sd35"]["diffusion_model"]
    config = sd3.config_from_shapes({sd3.PREFIX + k: v.shape for k, v in state.items()})
    ours = to_diffusers(state, sd3.key_rules(config))
    theirs = sfu.convert_sd3_transformer_checkpoint_to_diffusers({sd3.PREFIX + k: v for k, v in state.items()})
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_real_key_names(parts) -> None:
    sd, fl = parts["sd35"], parts["flux-dev"]
    assert sd3.MARKER in sd["diffusion_model"]
    assert {"joint_blocks.0.x_block.attn2.qkv.weight", "joint_blocks.1.x_block.attn.ln_q.weight",
            "final_layer.adaLN_modulation.1.weight", "pos_embed"} <= set(sd["diffusion_model"])
    assert "joint_blocks.1.context_block.attn.proj.weight" not in sd["diffusion_model"]  # pre-only last block
    assert {flux.MARKER, flux.GUIDANCE_MARKER, "single_blocks.1.linear1.weight",
            "double_blocks.0.img_attn.norm.query_norm.scale"} <= set(fl["diffusion_model"])
    assert flux.GUIDANCE_MARKER not in parts["flux-schnell"]["diffusion_model"]
    assert "shared.weight" in sd["t5xxl"] and "encoder.final_layer_norm.weight" in sd["t5xxl"]
    assert sd["t5xxl"]["shared.weight"].shape[0] == 32128
    assert "text_projection.weight" in sd["clip_g"] and "text_model.final_layer_norm.weight" in sd["clip_l"]
    assert sd["vae"]["decoder.conv_in.weight"].shape[1] == 16
    assert sd["vae"]["encoder.conv_out.weight"].shape[0] == 32
    assert "quant_conv.weight" not in sd["vae"]
    assert set(fl) == {"diffusion_model", "clip_l", "t5xxl", "vae"}


def test_checkpoint_and_separate_files_hold_the_same_tensors(tmp_path: Path) -> None:
    ckpt = fs.write_checkpoint(tmp_path / "flux.safetensors", "flux-schnell", seed=3)
    t5 = fs.write_part(tmp_path / "t5.safetensors", "t5xxl", "flux-schnell", seed=3)
    again = fs.write_checkpoint(tmp_path / "again.safetensors", "flux-schnell", seed=3)
    assert ckpt.read_bytes() == again.read_bytes()
    with safe_open(str(ckpt), "pt") as whole, safe_open(str(t5), "pt") as alone:
        keys = list(alone.keys())
        assert all(k.startswith("encoder.") or k == "shared.weight" for k in keys)
        for key in keys[:5]:
            assert torch.equal(alone.get_tensor(key), whole.get_tensor(fs.CHECKPOINT_PREFIXES["t5xxl"] + key))
        assert whole.metadata()["noodlebox.arch"] == "flux-schnell"


def test_refusals() -> None:
    with pytest.raises(ValueError, match="not made for"):
        fs.transformer_spec("flux-dev", "full")
    with pytest.raises(ValueError, match="has no clip_g"):
        fs.make_part("clip_g", "flux-dev")


def test_cli_writes_both_forms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-checkpoint", "--arch", "sd35", str(tmp_path / "sd35.safetensors")]) == 0
    assert main(["make-model", "--kind", "clip_g", "--arch", "sd35", str(tmp_path / "g.safetensors")]) == 0
    with safe_open(str(tmp_path / "sd35.safetensors"), "pt") as f:
        assert "text_encoders.clip_g.transformer.text_projection.weight" in set(f.keys())
    with safe_open(str(tmp_path / "g.safetensors"), "pt") as f:
        assert "text_projection.weight" in set(f.keys())
    capsys.readouterr()
    assert main(["make-checkpoint", "--arch", "flux-dev", "--size", "full", str(tmp_path / "x.safetensors")]) == 2
    assert "not made for" in capsys.readouterr().err
    assert main(["make-model", "--kind", "t5xxl", str(tmp_path / "t5.safetensors")]) == 2
    assert "--arch is required" in capsys.readouterr().err


# --- flow-matching sampling ----------------------------------------------------------------------


def _sd3_closed(t: torch.Tensor, shift: float = 3.0) -> torch.Tensor:
    return shift * t / (1 + (shift - 1) * t)


def _flux_closed(t: torch.Tensor, mu: float) -> torch.Tensor:
    return math.exp(mu) / (math.exp(mu) + 1 / t - 1)


def test_sd3_table_and_schedules_match_the_closed_form() -> None:
    schedule = flow.sd3_schedule(shift=3.0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(schedule.sigmas.double(), _sd3_closed(t), atol=1e-6)
    assert float(schedule.sigma_max) == 1.0
    simple = calculate_sigmas(schedule, "simple", 4)
    expected = [*_sd3_closed(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)).tolist(), 0.0]
    assert simple.tolist() == pytest.approx(expected, abs=1e-6)
    assert expected[:4] == pytest.approx([1.0, 0.9, 0.75, 0.5])
    # sgm_uniform: timesteps evenly from 1000 (sigma_max) down to sigma_min's, last one dropped.
    sgm = calculate_sigmas(schedule, "sgm_uniform", 4)
    ts = torch.linspace(1000.0, float(schedule.sigmas[0]) * 1000, 5, dtype=torch.float64)[:-1] / 1000
    assert sgm.tolist() == pytest.approx([*_sd3_closed(ts).tolist(), 0.0], abs=1e-6)
    beta = calculate_sigmas(schedule, "beta", 6)
    assert beta[0] == 1.0 and beta[-1] == 0.0 and bool((beta[:-1] > beta[1:]).all())
    assert set(beta[:-1].tolist()) <= set(schedule.sigmas.tolist())


@pytest.mark.parametrize(("width", "height", "mu"), [(1024, 1024, 1.15), (512, 512, 0.5 + 0.65 * 768 / 3840),
                                                      (256, 256, 0.5),
                                                      (128, 128, 0.5 - 0.65 * 192 / 3840)])
def test_flux_shift_follows_the_resolution(width: int, height: int, mu: float) -> None:
    assert flow.flux_shift_for_size(width, height) == pytest.approx(mu)
    schedule = flow.flux_schedule(flow.flux_shift_for_size(width, height))
    t = torch.arange(1, 10001, dtype=torch.float64) / 10000
    assert torch.allclose(schedule.sigmas.double(), _flux_closed(t, mu), atol=1e-6)
    simple = calculate_sigmas(schedule, "simple", 4)
    expected = _flux_closed(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64), mu).tolist()
    assert simple.tolist() == pytest.approx([*expected, 0.0], abs=1e-6)
    assert float(schedule.timestep(torch.tensor(0.5))) == 0.5  # Flux is fed sigma itself


def test_flow_denoiser_recovers_x0_from_the_velocity() -> None:
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 4, 4, generator=generator), torch.randn(2, 16, 4, 4, generator=generator)
    schedule = flow.sd3_schedule()
    sigma = torch.tensor([0.3, 0.8])
    x = schedule.noise_scaling(sigma, noise, x0)
    assert torch.allclose(x, (1 - sigma[:, None, None, None]) * x0 + sigma[:, None, None, None] * noise)
    assert torch.allclose(schedule.calculate_denoised(sigma, noise - x0, x), x0, atol=1e-6)
    assert schedule.scale_input(x, sigma) is x
    assert schedule.percent_to_sigma(0.0) == 1.0 and schedule.percent_to_sigma(1.0) == 0.0
    assert schedule.percent_to_sigma(0.5) == pytest.approx(0.75)
    aura = flow.sd3_schedule(shift=1.73, multiplier=1.0)
    assert float(aura.timestep(torch.tensor(0.5))) == 0.5


# --- loading: all-in-one, diffusion model only, separate text encoders ---------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("sd3_flux")
    out: dict[str, dict[str, Path]] = {}
    for arch in ("sd35", "flux-dev"):
        made = {"checkpoint": fs.write_checkpoint(root / f"{arch}.safetensors", arch, seed=1)}
        for part in fs.original_parts(fs.transformer_spec(arch)):
            made[part] = fs.write_part(root / f"{arch}-{part}.safetensors", part, arch, seed=1)
        out[arch] = made
    return out


@pytest.mark.parametrize("arch", ["sd35", "flux-dev"])
def test_three_forms_give_the_same_conditioning_and_prediction(arch: str, files) -> None:
    torch.set_num_threads(1)
    made, family = files[arch], "sd3" if arch == "sd35" else "flux"
    whole = loader.load_transformer_checkpoint(made["checkpoint"], precision="fp32")
    alone = loader.load_diffusion_model(made["diffusion_model"], precision="fp32")
    slots = {s: made[s] for s in ("clip_l", "clip_g", "t5xxl") if s in made}
    text = loader.load_text_encoders(slots, family, precision="fp32")
    prompt = "a (photo:1.3) of a cat"
    cond, pooled = whole.clip.encode(prompt)
    assert all(torch.equal(a, b) for a, b in zip((cond, pooled), text.encode(prompt), strict=True))
    if family == "sd3":  # 77 CLIP tokens then 77 T5 tokens; pooled = L | G
        assert cond.shape == (1, 154, 128) and pooled.shape == (1, 128)
    else:  # T5 alone, padded to 256; pooled = CLIP-L's
        assert cond.shape == (1, 256, 128) and pooled.shape == (1, 64)
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.7])
    v = whole.model.velocity(x, sigma, cond, pooled)
    assert v.shape == x.shape and bool(torch.isfinite(v).all())
    assert torch.equal(v, alone.velocity(x, sigma, cond, pooled))
    assert not torch.equal(v, whole.model.velocity(x, torch.tensor([0.2]), cond, pooled))
    assert whole.vae is not None and whole.vae.model.config.latent_channels == 16
    assert whole.vae.scale_factor == (sd3.VAE_SCALE if family == "sd3" else flux.VAE_SCALE)
    assert whole.model.variant == ("sd35_medium" if family == "sd3" else "flux_dev")


def test_guidance_reaches_flux_dev(files) -> None:
    model = loader.load_diffusion_model(files["flux-dev"]["diffusion_model"], precision="fp32")
    x, cond, pooled = torch.randn(1, 16, 4, 4), torch.randn(1, 8, 128), torch.randn(1, 64)
    sigma = torch.tensor([0.5])
    low = model.velocity(x, sigma, cond, pooled, guidance=torch.tensor([1.0]))
    assert not torch.equal(low, model.velocity(x, sigma, cond, pooled, guidance=torch.tensor([4.0])))


def test_fp8_storage_is_upcast_for_compute(files, tmp_path: Path) -> None:
    source = files["sd35"]["diffusion_model"]
    with safe_open(str(source), "pt") as f:
        tensors = {k: f.get_tensor(k).to(torch.float8_e4m3fn) for k in f.keys()}  # noqa: SIM118
    fp8 = tmp_path / "sd35-fp8.safetensors"
    save_file(tensors, str(fp8))
    model = loader.load_diffusion_model(fp8, precision="fp32")
    assert next(model.model.parameters()).dtype == torch.float32
    reference = loader.load_diffusion_model(source, precision="fp32")
    x, cond, pooled = torch.randn(1, 16, 4, 4), torch.randn(1, 8, 128), torch.randn(1, 128)
    a = model.velocity(x, torch.tensor([0.5]), cond, pooled)
    b = reference.velocity(x, torch.tensor([0.5]), cond, pooled)
    assert torch.allclose(a, b, atol=0.1) and not torch.equal(a, b)


def test_bad_inputs_get_one_line_reasons(files) -> None:
    made = files["flux-dev"]
    with pytest.raises(CheckpointError, match="a T5 file given for the clip_l slot"):
        loader.load_text_encoders({"clip_l": made["t5xxl"]}, "flux")
    with pytest.raises(CheckpointError, match="a CLIP file given for the t5xxl slot"):
        loader.load_text_encoders({"t5xxl": made["clip_l"]}, "flux")
    with pytest.raises(CheckpointError, match="flux has no clip_g"):
        loader.load_text_encoders({"clip_g": files["sd35"]["clip_g"]}, "flux")
    with pytest.raises(CheckpointError, match=r"no SD3 .* or Flux .* transformer"):
        loader.load_diffusion_model(made["t5xxl"])
    model = loader.load_diffusion_model(made["diffusion_model"], precision="fp32")
    with pytest.raises(ValueError, match="16-channel latents, got 4 channels"):
        model.velocity(torch.zeros(1, 4, 8, 8), torch.tensor([0.5]), torch.zeros(1, 8, 128), torch.zeros(1, 64))


def test_detection_reads_both_prefixes(files) -> None:
    with safe_open(str(files["sd35"]["checkpoint"]), "pt") as f:
        whole = loader.detect_transformer({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
    with safe_open(str(files["sd35"]["diffusion_model"]), "pt") as f:
        bare = loader.detect_transformer({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
    assert whole is not None and bare is not None
    assert (whole.prefix, bare.prefix) == (sd3.PREFIX, "")
    assert whole.config == bare.config
    assert set(whole.text) == {"clip_l", "clip_g", "t5xxl"} and whole.vae_prefix == "first_stage_model."
    assert bare.text == {} and bare.vae_prefix is None
