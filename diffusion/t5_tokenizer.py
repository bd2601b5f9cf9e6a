"""The T5 tokenizer of SD3 and Flux: SentencePiece's 32,100-token vocabulary, ComfyUI's rules.

The vocabulary is the original T5 one (32,000 SentencePiece pieces plus 100
``<extra_id_N>`` sentinels, Apache-2.0, Google). Nothing is downloaded: the files come from
the ``diffsynth`` 1.1.8 wheel on PyPI (Apache-2.0), which ships them as data under
``diffsynth/tokenizer_configs/flux/tokenizer_2/`` (``spiece.model``, sha256
``d60acb12...``, and the matching ``tokenizer.json``). The Makefile installs that wheel
with ``--no-deps`` (its own dependencies would pull torchvision); the package is located
with ``importlib.util.find_spec`` and never imported, as ``diffusion.tokenizer`` does for
the CLIP vocabulary.

Ids come from the fast (``tokenizers``) form of the vocabulary, the form ComfyUI's
``T5TokenizerFast`` reads. ComfyUI's T5 stream (``t5xxl``) differs from a CLIP stream:
no start token, one end token (``</s>`` = 1) after the whole prompt, no 77-token chunks
(one sequence of any length), then padding with ``<pad>`` (0) up to a minimum length:
77 for SD3, 256 for Flux. Weights ``(word:1.2)`` and ``embedding:name`` references go
through the same parser as CLIP's (``diffusion.prompt_weights``).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from diffusion.tokenizer import Chunk, PromptTokenizer, Token

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: The package whose wheel ships the vocabulary files, and the version the Makefile installs.
VOCAB_PACKAGE = "diffsynth"
VOCAB_PACKAGE_VERSION = "1.1.8"
VOCAB_FOLDER = ("tokenizer_configs", "flux", "tokenizer_2")

#: Vocabulary size: 32,000 SentencePiece pieces and 100 sentinels.
VOCAB_SIZE = 32100
PAD = 0
EOS = 1
UNK = 2
#: Minimum sequence length (end token included) per family, as ComfyUI pads them.
MIN_LENGTH = {"sd3": 77, "flux": 256}


def vocab_file(name: str = "tokenizer.json") -> Path:
    """Path of a T5 vocabulary file (``tokenizer.json`` or ``spiece.model``) in the installed package."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder).joinpath(*VOCAB_FOLDER, name)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"the T5 vocabulary ({name}) is not installed: run "
        f"'pip install --no-deps {VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION}' (or 'make models')"
    )


@functools.cache
def t5_vocab() -> Tokenizer:
    """The T5 SentencePiece-Unigram tokenizer (``tokenizers`` form), loaded once."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(vocab_file()))


def t5_encode(text: str) -> list[int]:
    """T5 ids of ``text`` without the end token."""
    return t5_vocab().encode(text, add_special_tokens=False).ids


@dataclass(frozen=True)
class T5Tokenizer(PromptTokenizer):
    """ComfyUI's ``t5xxl`` stream: weighted tokens, one end token, padded to ``min_length``.

    ``tokenize_with_weights`` returns a single chunk (a list with one list), as ComfyUI's
    tokenizer does when its maximum length is unbounded.
    """

    pad_token: int = PAD
    embedding_key: str | None = "t5xxl"
    embedding_size: int | None = 4096
    min_length: int = MIN_LENGTH["sd3"]
    min_padding: int = 0

    def encode(self, text: str) -> list[int]:
        """T5 ids of one piece of prompt text (no end token)."""
        return t5_encode(text)

    def chunk(self, groups: list[list[tuple[Token, float]]], return_word_ids: bool = False) -> list[Chunk]:
        """All groups in one sequence, then the end token, then ``<pad>`` up to the minimum length.

        ``min_padding`` adds at least that many pads after the end token (ComfyUI's
        ``T5TokenizerOptions``). Word ids number the groups from 1; end and pads get 0.
        """
        batch: list[tuple[Token, float, int]] = [
            (t, w, word_id) for word_id, group in enumerate(groups, start=1) for t, w in group
        ]
        batch.append((EOS, 1.0, 0))
        target = max(self.min_length, len(batch) + self.min_padding)
        batch.extend([(self.pad_token, 1.0, 0)] * (target - len(batch)))
        if return_word_ids:
            return [batch]
        return [[(t, w) for t, w, _ in batch]]


def family_tokenizer(family: str) -> T5Tokenizer:
    """The T5 stream tokenizer of ``family`` (``sd3`` or ``flux``)."""
    if family not in MIN_LENGTH:
        raise ValueError(f"no T5 stream for {family!r}; expected one of {', '.join(MIN_LENGTH)}")
    return T5Tokenizer(min_length=MIN_LENGTH[family])
