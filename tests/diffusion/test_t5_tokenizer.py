"""The T5 tokenizer: the real 32,100-token vocabulary and ComfyUI's t5xxl stream rules."""

from __future__ import annotations

import hashlib

import pytest

from diffusion import t5_tokenizer as t5
from diffusion.tokenizer import PromptTokenizer

# The original T5 SentencePiece model (the file every T5 v1.1 / Flux / SD3 repository carries).
SPIECE_SHA256 = "d60acb128cf7b7f2536e8f38a5b18a05535c9e14c7a355904270e15b0945ea86"

PROMPTS = [
    "a photo of a cat",
    "A Photo Of A Cat!",
    "an astronaut riding a horse on the moon, 4k, highly detailed",
    "  spaces   everywhere  ",
    "naïve café résumé",
    "日本語のテキスト",
    "emoji 🐱 test",
    "line\nbreak\ttab",
    "numbers 12345 and 3.14159",
    "",
    "UPPER lower MiXeD",
    "hyphen-ated words & symbols #@$%^*",
    "a cinematic portrait of an old fisherman, golden hour, 85mm, shallow depth of field",
]

# Checked by hand against the vocabulary's pieces: "▁" is 3, "a" 9, "▁photo" 1202, "▁of" 13,
# "▁cat" 1712, "▁A" 71, "▁and" 11, "▁dog" 1782, "<pad>" 0, "</s>" 1, "<unk>" 2.
KNOWN = {
    "a photo of a cat": [3, 9, 1202, 13, 3, 9, 1712],
    "A Photo Of A Cat!": [71, 5810, 1129, 71, 3431, 55],
    "and dog": [11, 1782],
    "日本語": [3, 2],
}


def test_vocabulary_is_the_real_t5_one() -> None:
    data = t5.vocab_file("spiece.model").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SPIECE_SHA256
    vocab = t5.t5_vocab()
    assert vocab.get_vocab_size() == t5.VOCAB_SIZE
    assert [vocab.id_to_token(i) for i in (0, 1, 2)] == ["<pad>", "</s>", "<unk>"]
    assert vocab.id_to_token(32099) == "<extra_id_0>"
    assert vocab.id_to_token(32000) == "<extra_id_99>"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_match_sentencepiece_itself(prompt: str) -> None:
    sentencepiece = pytest.importorskip("sentencepiece")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(t5.vocab_file("spiece.model")))
    assert sp.get_piece_size() + 100 == t5.VOCAB_SIZE
    assert t5.t5_encode(prompt) == sp.encode(prompt)


@pytest.mark.parametrize(("prompt", "ids"), KNOWN.items())
def test_known_ids(prompt: str, ids: list[int]) -> None:
    assert t5.t5_encode(prompt) == ids


def test_flux_pads_to_256_and_sd3_to_77() -> None:
    for family, length in (("flux", 256), ("sd3", 77)):
        (chunk,) = t5.family_tokenizer(family).tokenize_with_weights("a photo of a cat")
        assert len(chunk) == length
        assert [t for t, _ in chunk[:8]] == [*KNOWN["a photo of a cat"], t5.EOS]
        assert {t for t, _ in chunk[8:]} == {t5.PAD}
        assert {w for _, w in chunk} == {1.0}


def test_long_prompt_is_one_sequence_not_chunks() -> None:
    text = " ".join(["a photo of a cat"] * 60)  # 420 tokens: past both minimum lengths
    (chunk,) = t5.family_tokenizer("sd3").tokenize_with_weights(text)
    assert len(chunk) == 60 * 7 + 1
    assert chunk[-1] == (t5.EOS, 1.0)
    assert chunk[0] == (3, 1.0)  # no start token


def test_weights_and_word_ids() -> None:
    (chunk,) = t5.family_tokenizer("flux").tokenize_with_weights("a (cat:1.5) and ((dog))", return_word_ids=True)
    head = chunk[:7]
    # Segments are tokenized one by one, each with SentencePiece's leading "▁".
    assert [t for t, _, _ in head] == [3, 9, 1712, 11, 1782, t5.EOS, t5.PAD]
    assert [w for _, w, _ in head[:5]] == pytest.approx([1.0, 1.0, 1.5, 1.0, 1.1 * 1.1])
    assert [i for _, _, i in head] == [1, 1, 2, 3, 4, 0, 0]


def test_empty_prompt_is_end_token_then_padding() -> None:
    (chunk,) = t5.family_tokenizer("flux").tokenize_with_weights("")
    assert chunk == [(t5.EOS, 1.0)] + [(t5.PAD, 1.0)] * 255


def test_min_padding_adds_pads_past_the_end() -> None:
    tokenizer = t5.T5Tokenizer(min_length=0, min_padding=3)
    (chunk,) = tokenizer.tokenize_with_weights("a photo of a cat")
    assert [t for t, _ in chunk] == [*KNOWN["a photo of a cat"], t5.EOS, 0, 0, 0]


def test_clip_streams_unchanged_by_the_encode_hook() -> None:
    (chunk,) = PromptTokenizer().tokenize_with_weights("a photo of a cat")
    assert [t for t, _ in chunk[:7]] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="no T5 stream"):
        t5.family_tokenizer("sd1")
