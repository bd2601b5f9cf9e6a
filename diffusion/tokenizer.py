"""The CLIP BPE tokenizer and ComfyUI's ``tokenize_with_weights``: weights, embeddings, 77-token chunks.

The BPE tokenizer is transformers' ``CLIPTokenizer`` built from the vocabulary file that
the ``openai-clip`` package ships (``bpe_simple_vocab_16e6.txt.gz``), so nothing is
downloaded. The file is located with ``importlib.util.find_spec`` because importing
``clip`` itself fails here (it wants torchvision).

:class:`PromptTokenizer` turns a prompt into what ComfyUI's ``SDTokenizer`` produces
(PROTOCOL.md 9.9, 9.10): a list of 77-token chunks of ``(token, weight)`` pairs (or
``(token, weight, word_id)`` triples), where a token is a vocabulary id or, for a
textual-inversion embedding, a 1-D tensor that replaces the token embedding at that
position.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from diffusion.prompt_weights import parse_prompt_weights

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTokenizer

log = logging.getLogger(__name__)

#: Start-of-text and end-of-text ids of the CLIP vocabulary.
BOS = 49406
EOS = 49407
#: Tokens per chunk, BOS and EOS included.
MAX_LENGTH = 77
#: Groups at least this long may be split across chunks; shorter ones move whole.
MIN_SPLIT_GROUP = 8
#: Size of the CLIP vocabulary built from the BPE file.
VOCAB_SIZE = 49408

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# The file holds more merges than CLIP uses: its vocabulary stops at 49152 - 256 - 2.
_N_MERGES = 49152 - 256 - 2

EMBEDDING_PREFIX = "embedding:"
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
# Where ComfyUI looks for an embedding reference: at a segment's start, or after a
# space or a newline (which the split consumes).
_EMBEDDING_SPLIT = re.compile(r"[ \n]" + re.escape(EMBEDDING_PREFIX))

# CJK ideograph blocks (Unicode), each ideograph a word for ComfyUI's tokenizer.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

#: A token: a vocabulary id, or an embedding vector inserted at that position.
Token = Union[int, "torch.Tensor"]
#: One chunk of :data:`MAX_LENGTH` ``(token, weight)`` or ``(token, weight, word_id)``.
Chunk = list[tuple[Any, ...]]


def bpe_vocab_path() -> Path:
    """Path of the CLIP BPE merges file inside the installed ``openai-clip`` package."""
    spec = importlib.util.find_spec("clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / VOCAB_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{VOCAB_FILE} not found: install the 'openai-clip' package")


def _byte_symbols() -> list[str]:
    """The 256 stand-in characters of byte-level BPE, in CLIP's vocabulary order.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes get the characters
    from U+0100 on. The vocabulary lists the printable ones first, then the stand-ins.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(c) for c in printable] + [chr(256 + n) for n in range(256 - len(printable))]


@functools.cache
def clip_tokenizer() -> CLIPTokenizer:
    """The CLIP BPE tokenizer (vocabulary 49,408, ``model_max_length`` 77), built once.

    ``vocab`` and ``merges`` are passed as a dict and tuples: transformers 5 silently
    ignores ``vocab_file=``/``merges_file=`` and rejects merges given as strings.
    """
    from transformers import CLIPTokenizer

    with gzip.open(bpe_vocab_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    symbols = _byte_symbols()
    words = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=merges, model_max_length=MAX_LENGTH)


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def clean_text(text: str) -> str:
    """The text cleaning of ComfyUI's CLIP tokenizer, before BPE.

    ComfyUI's reference vectors show transformers' Python ``CLIPTokenizer`` running
    without ``ftfy``, which cleans text with BERT's basic tokenizer: control and format
    characters dropped, every whitespace character a space, each CJK ideograph a word
    of its own, NFC, lower case. So ``日本語`` is three words there but one for OpenAI's
    tokenizer (ftfy, HTML unescaping); we follow ComfyUI and do neither of those.
    """
    out: list[str] = []
    for char in text:
        cp = ord(char)
        if char in " \t\n\r" or unicodedata.category(char) == "Zs":
            out.append(" ")
        elif cp == 0xFFFD or unicodedata.category(char).startswith("C"):
            continue
        elif _is_cjk(cp):
            out.append(f" {char} ")
        else:
            out.append(char)
    return unicodedata.normalize("NFC", "".join(out)).lower().strip()


def encode_words(text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS and without any length limit."""
    # The backend encoder, not the tokenizer's __call__: no 77-token warning, less overhead.
    return clip_tokenizer().backend_tokenizer.encode(clean_text(text), add_special_tokens=False).ids


def find_embedding(name: str, dirs: Iterable[str | os.PathLike[str]]) -> Path | None:
    """The file for ``embedding:<name>``: ``<dir>/<name>`` or with a known extension.

    A name that would leave its directory (``../x``) is not looked up.
    """
    for folder in dirs:
        base = os.path.abspath(folder)
        path = os.path.abspath(os.path.join(base, name))
        try:
            if os.path.commonpath((base, path)) != base:
                continue
        except ValueError:  # different drives on Windows
            continue
        for candidate in (path, *(path + ext for ext in EMBEDDING_EXTENSIONS)):
            if os.path.isfile(candidate):
                return Path(candidate)
    return None


def _vectors_from(data: Any, key: str | None, size: int | None) -> torch.Tensor:
    """The embedding vectors in a loaded file, for the formats ComfyUI reads."""
    import torch

    if isinstance(data, dict) and "string_to_param" in data:  # A1111 .pt
        tensor = next(iter(data["string_to_param"].values()))
    elif isinstance(data, list):  # a list of {name: tensor}, kept where the width fits
        parts = [t.reshape(-1, t.shape[-1]) for d in data for t in d.values() if size is None or t.shape[-1] == size]
        tensor = torch.cat(parts)
    elif key is not None and key in data:  # SDXL files: {"clip_l": ..., "clip_g": ...}
        tensor = data[key]
    else:
        tensor = next(iter(data.values()))
    tensor = tensor.detach().to("cpu")
    return tensor.reshape(-1, tensor.shape[-1])


def load_embedding(
    name: str, dirs: Iterable[str | os.PathLike[str]], key: str | None = None, size: int | None = None
) -> torch.Tensor | None:
    """Vectors ``[n, dim]`` of the textual-inversion embedding ``name``, or None.

    ``key`` picks the stream's tensor in multi-encoder files (``clip_l``, ``clip_g``);
    ``size`` filters list-format files by width. Unreadable files are logged and skipped.
    """
    path = find_embedding(name, dirs)
    if path is None:
        return None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            import torch

            data = torch.load(path, map_location="cpu", weights_only=True)
        return _vectors_from(data, key, size)
    except Exception as exc:  # a bad file is the user's data, not our bug: warn and go on
        log.warning("error loading embedding %s, skipping it: %s", path, exc)
        return None


def _split_embedding_refs(segment: str) -> list[str]:
    """Cut a segment before every ``embedding:`` that follows a space or newline."""
    first, *rest = _EMBEDDING_SPLIT.split(segment)
    return [p for p in [first, *(EMBEDDING_PREFIX + r for r in rest)] if p]


@dataclass(frozen=True)
class PromptTokenizer:
    """One text stream's tokenizer, as ComfyUI's ``SDTokenizer`` (SD1/SDXL ``l``, SDXL ``g``).

    ``pad_token`` is the end token for CLIP-L and 0 for OpenCLIP streams (SDXL's ``g``,
    SD2's ``h``); ``embedding_key`` picks this stream's tensor from embedding files and
    ``embedding_size`` its width (used to filter list-format files).
    """

    pad_token: int = EOS
    embedding_key: str | None = "clip_l"
    embedding_size: int | None = None

    def tokenize_with_weights(
        self,
        text: str,
        embedding_dirs: Sequence[str | os.PathLike[str]] | None = None,
        return_word_ids: bool = False,
    ) -> list[Chunk]:
        """Weighted, chunked tokens of ``text``, exactly as ComfyUI's ``tokenize_with_weights``.

        With ``embedding_dirs=None`` an ``embedding:name`` reference is plain text; with
        directories (even none), a missing embedding is dropped with a warning.
        """
        return self.chunk(self.groups(text, embedding_dirs), return_word_ids)

    def groups(
        self, text: str, embedding_dirs: Sequence[str | os.PathLike[str]] | None = None
    ) -> list[list[tuple[Token, float]]]:
        """The token groups of a prompt: one per weighted segment, embedding, and leftover text."""
        groups: list[list[tuple[Token, float]]] = []
        for segment, weight in parse_prompt_weights(text):
            for piece in _split_embedding_refs(segment):
                word = piece
                if embedding_dirs is not None and piece.startswith(EMBEDDING_PREFIX):
                    name = piece[len(EMBEDDING_PREFIX) :].strip("\n")
                    vectors, word = self._lookup(name, embedding_dirs)
                    if vectors is None:
                        log.warning("warning, embedding:%s does not exist, ignoring", name)
                    else:
                        groups.append([(vector, weight) for vector in vectors])
                    if not word:
                        continue
                groups.append([(token, weight) for token in self.encode(word)])
        return groups

    def encode(self, text: str) -> list[int]:
        """Vocabulary ids of one piece of prompt text, no special tokens (a subclass may use another vocabulary)."""
        return encode_words(text)

    def _lookup(self, name: str, dirs: Sequence[str | os.PathLike[str]]) -> tuple[torch.Tensor | None, str]:
        """The embedding named by the first word of ``name``, and the text left after it."""
        words = name.split()
        first = words[0] if words else ""
        leftover = " ".join(words[1:])
        vectors = load_embedding(first, dirs, self.embedding_key, self.embedding_size) if first else None
        if vectors is None:
            stripped = first.strip(",")
            if len(stripped) < len(first):
                # "embedding:name," is common; ComfyUI retries without the commas and
                # keeps the tail of the word (sliced by length, as it does) as text.
                vectors = load_embedding(stripped, dirs, self.embedding_key, self.embedding_size)
                return vectors, f"{first[len(stripped) :]} {leftover}"
        return vectors, leftover

    def chunk(self, groups: list[list[tuple[Token, float]]], return_word_ids: bool = False) -> list[Chunk]:
        """Pack groups into 77-token chunks (PROTOCOL.md 9.10).

        A group that would overflow the current chunk is split there when it has at least
        :data:`MIN_SPLIT_GROUP` tokens, and otherwise moved whole to a new chunk. Word ids
        number the groups from 1; BOS, EOS and padding get 0.
        """
        room_total = MAX_LENGTH - 1  # one slot kept for EOS
        chunks: list[list[tuple[Token, float, int]]] = []
        current: list[tuple[Token, float, int]] = [(BOS, 1.0, 0)]
        for word_id, group in enumerate(groups, start=1):
            splittable = len(group) >= MIN_SPLIT_GROUP
            rest = group
            while rest:
                room = room_total - len(current)
                if len(rest) <= room:
                    current.extend((t, w, word_id) for t, w in rest)
                    break
                if splittable:
                    current.extend((t, w, word_id) for t, w in rest[:room])
                    rest = rest[room:]
                    current.append((EOS, 1.0, 0))
                else:
                    current.append((EOS, 1.0, 0))
                    current.extend([(self.pad_token, 1.0, 0)] * room)
                chunks.append(current)
                current = [(BOS, 1.0, 0)]
        current.append((EOS, 1.0, 0))
        current.extend([(self.pad_token, 1.0, 0)] * (MAX_LENGTH - len(current)))
        chunks.append(current)
        if return_word_ids:
            return chunks
        return [[(t, w) for t, w, _ in chunk] for chunk in chunks]
