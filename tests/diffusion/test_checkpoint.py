"""Round trips: random diffusers/transformers models -> original single-file layout -> our loader.

For every architecture at ``tiny`` size, the models the loader builds from the written file
must compute exactly what the models the weights came from compute.
"""

from __future__ import annotations

import time

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusion.checkpoint import inspect_checkpoint, load_checkpoint
from diffusion.detect import ADM_EMBED_DIM, ADM_SIZE_EMBEDDINGS, detect
from diffusion.models import LATENT_SCALE, LoadedCheckpoint
from diffusion.synthetic import ARCHS, SyntheticSpec, random_weights, synthetic_spec, write_checkpoint
from diffusion.text import ClipTextEncoder

SEED = 7
TOKENS = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407, 49407]])


def _reference(spec: SyntheticSpec) -> dict[str, torch.nn.Module]:
    """Real (not meta) models holding the same seeded weights the file was written from."""
    weights = random_weights(spec, SEED)
    models: dict[str, torch.nn.Module] = {
        "unet": UNet2DConditionModel(**spec.unet),
        "vae": AutoencoderKL(**spec.vae),
    }
    for name, config in spec.text.items():
        cls = CLIPTextModelWithProjection if name == "clip_g" else CLIPTextModel
        models[name] = cls(CLIPTextConfig(**config))
    for part, model in models.items():
        model.load_state_dict(weights[part], strict=True)
        # As the loader does: CPU kernels pick a different (equally valid) path for trainable weights.
        model.eval().requires_grad_(False)
    return models


@pytest.fixture(scope="module", params=ARCHS)
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name = request.param
    spec = synthetic_spec(name, "tiny")
    path = write_checkpoint(tmp_path_factory.mktemp(name) / f"{name}.safetensors", name, "tiny", SEED, torch.float32)
    started = time.perf_counter()
    loaded = load_checkpoint(path, precision="fp32")
    load_seconds = time.perf_counter() - started
    return spec, _reference(spec), loaded, load_seconds, path


def _unet_inputs(spec: SyntheticSpec) -> dict:
    g = torch.Generator().manual_seed(1)
    inputs = {
        "sample": torch.randn(2, spec.unet["in_channels"], 4, 4, generator=g),
        "timestep": torch.tensor([999, 10]),
        "encoder_hidden_states": torch.randn(2, 8, spec.unet["cross_attention_dim"], generator=g),
    }
    if spec.arch in ADM_SIZE_EMBEDDINGS:
        ids = ADM_SIZE_EMBEDDINGS[spec.arch]
        pooled = spec.unet["projection_class_embeddings_input_dim"] - ids * ADM_EMBED_DIM
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, pooled, generator=g),
            "time_ids": torch.tensor([[512.0, 512, 0, 0, 512, 512, 6.0][:ids]] * 2),
        }
    return inputs


@torch.no_grad()
def test_unet_round_trip_is_exact(pair) -> None:
    spec, ref, loaded, _, _ = pair
    inputs = _unet_inputs(spec)
    expected = ref["unet"](**inputs).sample
    got = loaded.unet.model(**inputs).sample
    assert torch.isfinite(expected).all()
    assert expected.abs().max() > 0
    assert torch.equal(got, expected)


@torch.no_grad()
def test_vae_round_trip_is_exact(pair) -> None:
    _, ref, loaded, _, _ = pair
    g = torch.Generator().manual_seed(2)
    latent = torch.randn(1, 4, 4, 4, generator=g)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    assert torch.equal(loaded.vae.model.decode(latent).sample, ref["vae"].decode(latent).sample)
    encoded = loaded.vae.model.encode(image).latent_dist.mean
    assert encoded.shape == (1, 4, 4, 4)  # a tiny VAE still downsamples by 8
    assert torch.equal(encoded, ref["vae"].encode(image).latent_dist.mean)


@torch.no_grad()
def test_text_encoders_round_trip_is_exact(pair) -> None:
    spec, ref, loaded, _, _ = pair
    assert isinstance(loaded.clip, ClipTextEncoder)
    assert loaded.clip.kind == spec.arch
    slots = {"clip_l": loaded.clip.clip_l, "clip_h": loaded.clip.clip_l, "clip_g": loaded.clip.clip_g}
    for name in spec.text:
        got = slots[name](TOKENS, output_hidden_states=True)
        expected = ref[name](TOKENS, output_hidden_states=True)
        assert torch.equal(got.last_hidden_state, expected.last_hidden_state), name
        assert len(got.hidden_states) == spec.text[name]["num_hidden_layers"] + 1  # every layer kept (clip skip)
        if name == "clip_g":
            assert torch.equal(got.text_embeds, expected.text_embeds)


def test_loaded_objects_carry_the_facts_not_in_the_weights(pair) -> None:
    spec, _, loaded, _, _ = pair
    assert isinstance(loaded, LoadedCheckpoint)
    assert loaded.arch == spec.arch
    assert loaded.prediction == spec.prediction
    assert loaded.unet.prediction == spec.prediction
    assert loaded.unet.latent_scale == loaded.vae.scale_factor == LATENT_SCALE[spec.arch]
    assert loaded.unet.inpaint == (spec.name == "sd15-inpaint")
    assert loaded.unet.dtype == torch.float32
    assert all(p.dtype == torch.float32 for m in loaded.modules() for p in m.parameters())
    expected_adm = spec.unet.get("projection_class_embeddings_input_dim")
    assert loaded.unet.adm_channels == expected_adm
    assert loaded.unet.schedule.prediction == spec.prediction
    assert loaded.unet.schedule.sigma_min.item() == pytest.approx(0.029167, abs=1e-5)
    assert loaded.unet.schedule.sigma_max.item() == pytest.approx(14.614641, abs=1e-4)


def test_tiny_checkpoint_loads_and_steps_fast(pair) -> None:
    spec, _, loaded, load_seconds, _ = pair
    started = time.perf_counter()
    with torch.no_grad():
        loaded.unet.model(**_unet_inputs(spec))
    step_seconds = time.perf_counter() - started
    # "well under a second" on a quiet machine; generous here because the test machine is shared.
    assert load_seconds + step_seconds < 10.0


def test_configs_derived_from_shapes_match_the_generating_configs(pair) -> None:
    spec, _, _, _, path = pair
    info = inspect_checkpoint(path)
    assert info["arch"] == spec.arch
    assert info["prediction"] == spec.prediction
    assert info["dtype"] == "fp32"
    assert info["unet"]["in_channels"] == spec.unet["in_channels"]
    assert info["metadata"]["noodlebox.origin"] == "noodlebox synthetic random weights"
    assert {e["name"] for e in info["text_encoders"]} == set(spec.text)


def test_caller_choice_of_prediction_wins(pair) -> None:
    spec, _, _, _, path = pair
    other = "eps" if spec.prediction == "v" else "v"
    loaded = load_checkpoint(path, precision="fp32", prediction=other, parts=("unet",))
    assert loaded.unet.prediction == other
    assert loaded.clip is None and loaded.vae is None


def _ldm_shapes(name: str, size: str) -> dict[str, tuple[int, ...]]:
    """The single-file shapes of a model, from meta-device models (no weights drawn)."""
    from diffusion import convert
    from diffusion.detect import TEXT_LAYOUTS, UNET_PREFIX
    from diffusion.synthetic import build_models

    spec = synthetic_spec(name, size)
    models = build_models(spec)
    unet = convert.unet_to_ldm(models["unet"].state_dict(), spec.unet)
    vae = convert.vae_to_ldm(models["vae"].state_dict(), spec.vae)
    shapes = {UNET_PREFIX + k: tuple(v.shape) for k, v in unet.items()}
    shapes |= {"first_stage_model." + k: tuple(v.shape) for k, v in vae.items()}
    for encoder, (prefix, layout) in TEXT_LAYOUTS[spec.arch].items():
        state = models[encoder].state_dict()
        mapped = convert.clip_to_ldm(state, 77) if layout == "hf" else convert.openclip_to_ldm(state)
        shapes |= {prefix + k: tuple(v.shape) for k, v in mapped.items()}
    return shapes


@pytest.mark.parametrize(
    ("name", "unet_params", "heads", "depths"),
    [
        ("sd15", 859_520_964, 8, [1, 1, 1, 1]),
        ("sd2", 865_910_724, [5, 10, 20, 20], [1, 1, 1, 1]),
        ("sdxl", 2_567_463_684, [5, 10, 20], [1, 2, 10]),
    ],
)
def test_full_size_shapes_give_the_real_configs(name: str, unet_params: int, heads, depths) -> None:
    """Detection on real-size shapes reproduces the published UNet configs and parameter counts."""
    layout = detect(_ldm_shapes(name, "full"))
    assert layout.unet_params == unet_params
    assert layout.unet_config["attention_head_dim"] == heads
    assert layout.unet_config["transformer_layers_per_block"] == depths
    assert layout.vae_config["block_out_channels"] == [128, 256, 512, 512]
    assert layout.vae_params == 83_653_863
