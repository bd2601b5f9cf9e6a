"""Prompt encoding on tiny random CLIP text models: layers, clip skip, weights, chunks, SDXL, embeddings."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from diffusion.text import ClipTextEncoder
from diffusion.tokenizer import BOS, EOS

CAT, DOG, A = 2368, 1929, 320
L_DIM, G_DIM, G_PROJ = 32, 48, 24


def _config(hidden: int, layers: int, projection: int = 16) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )


@pytest.fixture(scope="module")
def clip_l() -> CLIPTextModel:
    torch.manual_seed(0)
    return CLIPTextModel(_config(L_DIM, 3)).eval()


@pytest.fixture(scope="module")
def clip_g() -> CLIPTextModelWithProjection:
    torch.manual_seed(1)
    return CLIPTextModelWithProjection(_config(G_DIM, 4, G_PROJ)).eval()


@pytest.fixture(scope="module")
def sd1(clip_l: CLIPTextModel) -> ClipTextEncoder:
    return ClipTextEncoder("sd1", clip_l)


@pytest.fixture(scope="module")
def sdxl(clip_l: CLIPTextModel, clip_g: CLIPTextModelWithProjection) -> ClipTextEncoder:
    return ClipTextEncoder("sdxl", clip_l, clip_g)


def _reference(model: torch.nn.Module, ids: list[int], pad: int) -> object:
    """transformers' own forward on one padded chunk, all hidden states kept."""
    row = torch.tensor([[BOS, *ids, EOS] + [pad] * (75 - len(ids))])
    with torch.no_grad():
        return model(row, output_hidden_states=True)


def test_sd1_default_is_the_final_output_and_pooled_at_eos(sd1: ClipTextEncoder, clip_l: CLIPTextModel) -> None:
    cond, pooled = sd1.encode("a cat")
    ref = _reference(clip_l, [A, CAT], EOS)
    assert cond.shape == (1, 77, L_DIM) and pooled.shape == (1, L_DIM)
    torch.testing.assert_close(cond, ref.last_hidden_state, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, ref.pooler_output, rtol=0, atol=1e-6)


def test_sd1_clip_skip(sd1: ClipTextEncoder, clip_l: CLIPTextModel) -> None:
    plain, pooled = sd1.encode("a cat")
    last, _ = sd1.encode("a cat", clip_skip=-1)
    torch.testing.assert_close(last, plain, rtol=0, atol=1e-6)
    skip2, pooled2 = sd1.encode("a cat", clip_skip=-2)
    assert not torch.allclose(skip2, plain, atol=1e-3)
    # SD1 passes the penultimate layer through the final LayerNorm
    ref = _reference(clip_l, [A, CAT], EOS)
    torch.testing.assert_close(skip2, clip_l.final_layer_norm(ref.hidden_states[-2]), rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled2, pooled, rtol=0, atol=0)  # pooled ignores clip skip
    beyond, _ = sd1.encode("a cat", clip_skip=-24)  # deeper than the model: final output
    torch.testing.assert_close(beyond, plain, rtol=0, atol=0)


def test_with_clip_skip_is_a_copy(sd1: ClipTextEncoder) -> None:
    skipped = sd1.with_clip_skip(-2)
    assert skipped is not sd1 and sd1.clip_skip is None and skipped.clip_skip == -2
    assert skipped.clip_l is sd1.clip_l
    torch.testing.assert_close(skipped.encode("a cat")[0], sd1.encode("a cat", clip_skip=-2)[0], rtol=0, atol=0)
    with pytest.raises(AttributeError):
        sd1._clip_skip = -2  # type: ignore[misc]


def test_weight_one_is_the_plain_encoding(sd1: ClipTextEncoder) -> None:
    plain, _ = sd1.encode("a cat dog")
    weighted, _ = sd1.encode("a (cat:1.0) dog")
    assert torch.equal(weighted, plain)


def test_weight_scales_the_distance_from_the_empty_prompt(sd1: ClipTextEncoder) -> None:
    plain, plain_pooled = sd1.encode("a cat dog")
    empty, _ = sd1.encode("")
    weighted, pooled = sd1.encode("a (cat:1.5) dog")
    cat = 2  # position of "cat" after BOS and "a"
    expected = (plain[0, cat] - empty[0, cat]) * 1.5 + empty[0, cat]
    torch.testing.assert_close(weighted[0, cat], expected, rtol=0, atol=1e-5)
    others = [i for i in range(77) if i != cat]
    torch.testing.assert_close(weighted[0, others], plain[0, others], rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, plain_pooled, rtol=0, atol=1e-6)  # pooled is never weighted


def test_long_prompt_is_encoded_chunk_by_chunk(sd1: ClipTextEncoder) -> None:
    text = "cat " * 75 + "dog " * 10
    cond, pooled = sd1.encode(text)
    assert cond.shape == (1, 154, L_DIM)
    chunks = sd1.tokenize(text)["l"]
    second, _ = sd1.encode_tokens({"l": [chunks[1]]})
    torch.testing.assert_close(cond[:, 77:], second, rtol=0, atol=1e-6)
    _, first_pooled = sd1.encode_tokens({"l": [chunks[0]]})
    torch.testing.assert_close(pooled, first_pooled, rtol=0, atol=1e-6)


def test_sdxl_concatenates_penultimate_layers_and_pools_clip_g(
    sdxl: ClipTextEncoder, clip_l: CLIPTextModel, clip_g: CLIPTextModelWithProjection
) -> None:
    cond, pooled = sdxl.encode("a cat")
    assert cond.shape == (1, 77, L_DIM + G_DIM) and pooled.shape == (1, G_PROJ)
    ref_l = _reference(clip_l, [A, CAT], EOS)
    ref_g = _reference(clip_g, [A, CAT], 0)
    # no final LayerNorm on SDXL's hidden -2; clip_g pads with 0
    torch.testing.assert_close(cond[..., :L_DIM], ref_l.hidden_states[-2], rtol=0, atol=1e-6)
    torch.testing.assert_close(cond[..., L_DIM:], ref_g.hidden_states[-2], rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, ref_g.text_embeds, rtol=0, atol=1e-6)
    last, _ = sdxl.encode("a cat", clip_skip=-1)
    torch.testing.assert_close(last[..., L_DIM:], ref_g.hidden_states[-1], rtol=0, atol=1e-6)


def test_sdxl_refiner_uses_clip_g_only(clip_g: CLIPTextModelWithProjection) -> None:
    cond, pooled = ClipTextEncoder("sdxl_refiner", clip_g=clip_g).encode("a cat " * 50)
    assert cond.shape == (1, 154, G_DIM) and pooled.shape == (1, G_PROJ)


def test_sd2_pads_with_zero_and_norms_the_penultimate_layer(clip_l: CLIPTextModel) -> None:
    sd2 = ClipTextEncoder("sd2", clip_l)
    assert list(sd2.tokenize("a cat")) == ["h"]
    cond, _ = sd2.encode("a cat")
    ref = _reference(clip_l, [A, CAT], 0)
    torch.testing.assert_close(cond, clip_l.final_layer_norm(ref.hidden_states[-2]), rtol=0, atol=1e-6)


def test_embedding_vectors_replace_token_embeddings(
    sd1: ClipTextEncoder, clip_l: CLIPTextModel, tmp_path: Path
) -> None:
    table = clip_l.embeddings.token_embedding.weight.detach()
    save_file({"emb_params": table[[CAT, DOG]].clone()}, str(tmp_path / "pets.safetensors"))
    with_embedding, pooled = sd1.encode("a embedding:pets", embedding_dirs=[tmp_path])
    words, words_pooled = sd1.encode("a cat dog")
    torch.testing.assert_close(with_embedding, words, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, words_pooled, rtol=0, atol=1e-6)
    weighted, _ = sd1.encode("a (embedding:pets:1.2)", embedding_dirs=[tmp_path])
    torch.testing.assert_close(weighted, sd1.encode("a (cat dog:1.2)")[0], rtol=0, atol=1e-6)


def test_embedding_of_the_wrong_width_is_ignored(sd1: ClipTextEncoder, tmp_path: Path) -> None:
    save_file({"emb_params": torch.ones(1, L_DIM + 1)}, str(tmp_path / "wide.safetensors"))
    cond, pooled = sd1.encode("a embedding:wide cat", embedding_dirs=[tmp_path])
    plain, plain_pooled = sd1.encode("a cat")
    torch.testing.assert_close(cond, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, plain_pooled, rtol=0, atol=1e-6)


def test_output_keeps_the_model_dtype(clip_l: CLIPTextModel) -> None:
    half = CLIPTextModel(_config(L_DIM, 2)).to(torch.bfloat16).eval()
    cond, pooled = ClipTextEncoder("sd1", half).encode("a (cat:1.2)")
    assert cond.dtype == pooled.dtype == torch.bfloat16


def test_bad_arguments_are_refused(clip_l: CLIPTextModel) -> None:
    with pytest.raises(ValueError, match="unknown text encoder kind"):
        ClipTextEncoder("sd3", clip_l)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_g"):
        ClipTextEncoder("sdxl", clip_l)


def test_eager_attention_and_the_explicit_mask_fallback_agree(
    sd1: ClipTextEncoder, clip_l: CLIPTextModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, _ = sd1.encode("a (cat:1.3) dog")
    config = _config(L_DIM, 3)
    config._attn_implementation = "eager"
    eager = CLIPTextModel(config).eval()
    eager.load_state_dict(clip_l.state_dict())
    torch.testing.assert_close(ClipTextEncoder("sd1", eager).encode("a (cat:1.3) dog")[0], expected, rtol=0, atol=1e-5)

    import transformers.masking_utils

    def changed_helper(**kwargs: object) -> None:
        raise TypeError("signature changed")

    monkeypatch.setattr(transformers.masking_utils, "create_causal_mask", changed_helper)
    torch.testing.assert_close(sd1.encode("a (cat:1.3) dog")[0], expected, rtol=0, atol=1e-5)
