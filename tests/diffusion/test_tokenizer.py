"""The CLIP BPE tokenizer and ComfyUI's tokenize_with_weights, checked against ComfyUI's own output."""

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from diffusion.tokenizer import (
    BOS,
    EOS,
    MAX_LENGTH,
    VOCAB_SIZE,
    PromptTokenizer,
    clean_text,
    clip_tokenizer,
    encode_words,
    find_embedding,
    load_embedding,
)

SD1 = PromptTokenizer()
SDXL_G = PromptTokenizer(pad_token=0, embedding_key="clip_g")
COMMA, CAT, DOG, A = 267, 2368, 1929, 320


def _reference_tokenizer_section() -> dict[str, Any]:
    """The ``tokenizer`` section of ComfyUI's reference vectors, empty when the file is absent."""
    here = Path(__file__).resolve()
    candidates = [
        os.environ.get("NOODLEBOX_REFERENCE", ""),
        here.parents[1] / "data" / "comfy_reference_vectors.json",
        here.parents[3] / "shared" / "reference" / "comfy_reference_vectors.json",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return json.loads(Path(candidate).read_text())["tokenizer"]
    return {}


# Without the file the reference cases collect as empty (skipped) parameter sets.
REFERENCE = _reference_tokenizer_section()


def _as_lists(chunks: list[list[tuple[Any, ...]]]) -> list[list[list[Any]]]:
    return [[list(item) for item in chunk] for chunk in chunks]


def _ids(chunk: list[tuple[Any, ...]]) -> list[Any]:
    """Token ids of a chunk up to and including the first end token."""
    ids = [item[0] for item in chunk]
    return ids[: ids.index(EOS) + 1]


def test_bpe_vocabulary_and_a_known_prompt() -> None:
    tokenizer = clip_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE
    assert tokenizer.model_max_length == MAX_LENGTH
    assert tokenizer("a photo of a cat")["input_ids"] == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert clip_tokenizer() is tokenizer  # built once


def test_cleaning_splits_cjk_and_drops_control_characters() -> None:
    assert clean_text("日本語") == "日  本  語"
    assert clean_text("a\u200bb\x00c\tz ") == "abc z"


REF_PROMPTS = {p["id"]: p for p in REFERENCE.get("prompts", [])}


@pytest.mark.parametrize("prompt_id", sorted(REF_PROMPTS))
def test_sd1_chunks_match_comfyui(prompt_id: str, tmp_path: Path) -> None:
    ref = REF_PROMPTS[prompt_id]
    dirs = [tmp_path]  # ComfyUI's reference used an existing, empty embeddings directory
    assert _as_lists(SD1.tokenize_with_weights(ref["text"], dirs)) == ref["chunks"]
    with_ids = SD1.tokenize_with_weights(ref["text"], dirs, return_word_ids=True)
    assert _as_lists(with_ids) == ref["chunks_with_word_ids"]
    assert len(with_ids) == ref["num_chunks"]
    assert clip_tokenizer().convert_ids_to_tokens(_ids(with_ids[0])) == ref["tokens_text"]
    if "no_embedding_dir_chunks" in ref:
        assert _as_lists(SD1.tokenize_with_weights(ref["text"], None)) == ref["no_embedding_dir_chunks"]


@pytest.mark.skipif("embedding_missing" not in REF_PROMPTS, reason="reference vectors not found")
def test_missing_embedding_is_dropped_with_comfyui_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ref = REF_PROMPTS["embedding_missing"]
    with caplog.at_level(logging.WARNING, logger="diffusion.tokenizer"):
        SD1.tokenize_with_weights(ref["text"], [tmp_path])
    assert [r.getMessage() for r in caplog.records] == ref["log_messages_from_one_call"]


REF_SDXL = {p["id"]: p for p in REFERENCE.get("sdxl", {}).get("prompts", [])}


@pytest.mark.parametrize("prompt_id", sorted(REF_SDXL))
def test_sdxl_streams_match_comfyui(prompt_id: str, tmp_path: Path) -> None:
    ref = REF_SDXL[prompt_id]
    assert _as_lists(SD1.tokenize_with_weights(ref["text"], [tmp_path])) == ref["l"]
    assert _as_lists(SDXL_G.tokenize_with_weights(ref["text"], [tmp_path])) == ref["g"]


def test_small_group_moves_whole_to_the_next_chunk() -> None:
    # 74 plain tokens, then a weighted 3-token group that would overflow: it moves whole.
    text = "cat " * 74 + "(a cat dog:1.2)"
    first, second = SD1.tokenize_with_weights(text, return_word_ids=True)
    assert [t for t, _, _ in first[:76]] == [BOS] + [CAT] * 74 + [EOS]
    assert all(t == EOS and w == 1.0 and i == 0 for t, w, i in first[75:])
    assert second[:5] == [(BOS, 1.0, 0), (A, 1.2, 2), (CAT, 1.2, 2), (DOG, 1.2, 2), (EOS, 1.0, 0)]


def test_large_group_is_split_at_the_chunk_boundary() -> None:
    first, second = SD1.tokenize_with_weights("cat " * 74 + "(" + "dog " * 8 + ":1.2)")
    assert first[75:] == [(DOG, 1.2), (EOS, 1.0)]
    assert second[:9] == [(BOS, 1.0)] + [(DOG, 1.2)] * 7 + [(EOS, 1.0)]


def test_unweighted_prompt_is_cut_every_75_tokens() -> None:
    chunks = SD1.tokenize_with_weights("cat " * 160)
    assert [sum(t == CAT for t, _ in c) for c in chunks] == [75, 75, 10]
    assert all(len(c) == MAX_LENGTH and c[0] == (BOS, 1.0) for c in chunks)


def test_clip_g_pads_with_zero() -> None:
    (chunk,) = SDXL_G.tokenize_with_weights("cat")
    assert [t for t, _ in chunk[:4]] == [BOS, CAT, EOS, 0]


def _write_embedding(folder: Path, name: str, vectors: torch.Tensor) -> None:
    save_file({"emb_params": vectors.contiguous()}, str(folder / f"{name}.safetensors"))


def test_embedding_vectors_are_inserted_with_the_segment_weight(tmp_path: Path) -> None:
    vectors = torch.randn(2, 32)
    _write_embedding(tmp_path, "style", vectors)
    (chunk,) = SD1.tokenize_with_weights("a embedding:style cat, (embedding:style:1.3)", [tmp_path], True)
    assert chunk[0] == (BOS, 1.0, 0) and chunk[1] == (A, 1.0, 1)
    for position, word_id in ((2, 2), (3, 2)):
        token, weight, wid = chunk[position]
        assert torch.equal(token, vectors[position - 2]) and weight == 1.0 and wid == word_id
    assert chunk[4:6] == [(CAT, 1.0, 3), (COMMA, 1.0, 3)]
    assert [(w, wid) for _, w, wid in chunk[6:8]] == [(1.3, 4), (1.3, 4)]
    assert chunk[8] == (EOS, 1.0, 0)


def test_embedding_name_with_trailing_comma_is_found(tmp_path: Path) -> None:
    _write_embedding(tmp_path, "style", torch.ones(1, 32))
    (chunk,) = SD1.tokenize_with_weights("embedding:style, cat", [tmp_path])
    assert torch.is_tensor(chunk[1][0])
    assert chunk[2:5] == [(COMMA, 1.0), (CAT, 1.0), (EOS, 1.0)]


def test_embedding_formats_and_stream_keys(tmp_path: Path) -> None:
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.ones(3, 1280)}, str(tmp_path / "xl.safetensors"))
    torch.save({"string_to_param": {"*": torch.full((2, 768), 2.0)}, "name": "old"}, tmp_path / "a1111.pt")
    assert load_embedding("xl", [tmp_path], "clip_g").shape == (3, 1280)
    assert load_embedding("xl", [tmp_path], "clip_l").shape == (1, 768)
    assert torch.equal(load_embedding("a1111", [tmp_path], "clip_l"), torch.full((2, 768), 2.0))
    assert load_embedding("a1111.pt", [tmp_path]) is not None  # the name may carry its extension
    assert load_embedding("nothing", [tmp_path]) is None


def test_embedding_lookup_stays_inside_its_directory(tmp_path: Path) -> None:
    inner = tmp_path / "embeddings"
    inner.mkdir()
    _write_embedding(tmp_path, "secret", torch.ones(1, 32))
    assert find_embedding("../secret", [inner]) is None
    assert find_embedding("secret", [tmp_path]) == tmp_path / "secret.safetensors"


def test_without_embedding_directories_the_reference_is_text() -> None:
    (chunk,) = SD1.tokenize_with_weights("embedding:style", None)
    assert _ids(chunk)[1:-1] == encode_words("embedding:style")
