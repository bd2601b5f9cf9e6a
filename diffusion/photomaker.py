"""PhotoMaker v1 (PHOTOMAKER): a face image fused into one token of an SDXL prompt's conditioning.

The released ``photomaker-v1.bin`` is a torch pickle ``{"id_encoder": ..., "lora_weights": ...}``.
The ID encoder is a CLIP ViT-L/14 vision model with its projection in transformers' names
(``vision_model.*``, ``visual_projection.weight``, 1024 -> 768), a second projection
``visual_projection_2.weight`` (1024 -> 1280, no bias) and ``fuse_module``: two MLPs
(``mlp1``/``mlp2``, each ``layernorm`` -> ``fc1`` -> GELU -> ``fc2``) and a ``layer_norm``.
The two projections of the image's pooled output (the normed class token), side by side, are
as wide as SDXL's conditioning (768 + 1280 = 2048). ``lora_weights`` is a UNet LoRA that
ComfyUI's node does not read, and neither do we. A flat ``.safetensors`` of the ID encoder
(bare keys or under ``id_encoder.``) is read the same way. Widths come from the shapes.

Encoding follows ComfyUI's ``PhotoMakerEncode``: the trigger is the first space-separated word
that is exactly ``photomaker``; the token row it marks is the one at the trigger's word index
(the word before it, the class word, when the words before are one token each), in the first
77-token chunk. The ID embedding of the first image in the batch and that row are fused::

    x = mlp1(cat(row, id)) + row;  x = mlp2(x) + x;  row' = layer_norm(x)

and ``row'`` replaces the row; every other row, and the pooled output, are the prompt's.
The tokens are ComfyUI's: it drops the tokens whose word id is the trigger's word position, but
its word ids number weighted segments (and embedding references), not words, so in a plain prompt
the trigger stays in the text (:func:`photomaker_tokens`). Where we differ: a prompt over 77
tokens is encoded (ComfyUI's 77-long mask fails on it).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffusion.checkpoint import (
    PICKLE_SUFFIXES,
    CheckpointError,
    TensorFile,
    _as_checkpoint_errors,
    _build,
    load_pickle,
)
from diffusion.conditioning import Conditioning, from_encoding
from diffusion.control.clip_vision import ClipVisionModel, preprocess
from diffusion.control.clip_vision_openclip import load_clip_vision_from
from diffusion.files import atomic_path
from diffusion.precision import Precision, resolve_precision
from diffusion.text import ClipTextEncoder, EmbeddingDirs
from diffusion.tokenizer import MAX_LENGTH

TRIGGER = "photomaker"
_VISION_KEYS = ("vision_model.", "visual_projection.weight")
_PROJECTION_2 = "visual_projection_2.weight"
_FUSE = "fuse_module."


class _MLP(nn.Module):
    """LayerNorm, then two linears with an exact GELU between them, plus the input when widths allow."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, residual: bool) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(nn.functional.gelu(self.fc1(self.layernorm(x))))
        return out + x if self.residual else out


class FuseModule(nn.Module):
    """PhotoMaker's fuse: ``forward(prompt_rows [N, E], id_embeds [N, E]) -> [N, E]`` (see the module docstring)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp1 = _MLP(2 * width, width, width, residual=False)
        self.mlp2 = _MLP(width, width, width, residual=True)
        self.layer_norm = nn.LayerNorm(width)

    def forward(self, prompt_rows: torch.Tensor, id_embeds: torch.Tensor) -> torch.Tensor:
        x = self.mlp1(torch.cat([prompt_rows, id_embeds], dim=-1)) + prompt_rows
        return self.layer_norm(self.mlp2(x))


@dataclass(eq=False)
class PhotoMaker:
    """A loaded PhotoMaker ID encoder: the CLIP vision model, the second projection and the fuse module."""

    vision: ClipVisionModel
    projection_2: nn.Linear
    fuse: FuseModule

    @property
    def width(self) -> int:
        """Width of the ID embedding, which must be the conditioning's (2048 for SDXL)."""
        return self.fuse.layer_norm.normalized_shape[0]

    def id_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE ``[B, H, W, C]`` -> ID embeddings ``[B, width]``: both projections of the pooled output."""
        vision = self.vision
        pixels = preprocess(image, vision.image_size, crop=True).to(vision.device, vision.dtype)
        with torch.no_grad():
            pooled = vision.model.vision_model(pixel_values=pixels).pooler_output
            return torch.cat([vision.model.visual_projection(pooled), self.projection_2(pooled)], dim=-1)

    def fuse_row(self, cond: torch.Tensor, row: int, image: torch.Tensor) -> torch.Tensor:
        """``cond [1, T, width]`` with token ``row`` fused with the first image's ID embedding (a new tensor)."""
        vision = self.vision
        ids = self.id_embeds(image[:1])
        with torch.no_grad():
            fused = self.fuse(cond[0, row:row + 1].to(vision.device, vision.dtype), ids)
        out = cond.clone()
        out[0, row] = fused[0].to(cond.device, cond.dtype)
        return out


def trigger_word_id(text: str) -> int | None:
    """ComfyUI's word id of the trigger: its 1-based position among the prompt's space-separated words."""
    words = text.split(" ")
    return words.index(TRIGGER) + 1 if TRIGGER in words else None


def photomaker_tokens(clip: ClipTextEncoder, text: str, embedding_dirs: EmbeddingDirs = ()) -> dict[str, Any]:
    """The prompt's tokens without those of the trigger's word id, each chunk padded back with its last token.

    ComfyUI's tokenizer numbers weighted segments (and embedding references), not words, so in a
    plain prompt the trigger's word id names no tokens and nothing is dropped; a trigger that is
    the first word drops the first segment. This is ComfyUI's rule, kept for its pixels.
    """
    word = trigger_word_id(text)
    out = {}
    for key, chunks in clip.tokenize(text, embedding_dirs, word_ids=True).items():
        kept_chunks = []
        for chunk in chunks:
            kept = [(t, w) for t, w, word_id in chunk if word is None or word_id != word]
            kept += [(chunk[-1][0], chunk[-1][1])] * (len(chunk) - len(kept))
            kept_chunks.append(kept)
        out[key] = kept_chunks
    return out


def encode_photomaker(photomaker: PhotoMaker, clip: ClipTextEncoder, text: str, image: torch.Tensor,
                      embedding_dirs: EmbeddingDirs = ()) -> Conditioning:
    """PhotoMakerEncode: the prompt encoded by ComfyUI's trigger rule, the row at the trigger's word position
    (the class word before it, in a prompt of one-token words) fused with the first image's ID embedding."""
    cond, pooled = clip.encode_tokens(photomaker_tokens(clip, text, embedding_dirs))
    if cond.shape[-1] != photomaker.width:
        raise ValueError(f"the PhotoMaker ID embeddings are {photomaker.width} wide but this CLIP's conditioning is "
                         f"{cond.shape[-1]} wide: PhotoMaker needs the CLIP of the SDXL model it was made for")
    word = trigger_word_id(text)
    if word is not None and word - 1 < min(MAX_LENGTH, cond.shape[1]):
        cond = photomaker.fuse_row(cond, word - 1, image)
    return from_encoding(cond, pooled)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The ID encoder's tensors of a ``.bin`` pickle (its ``id_encoder`` entry) or a flat ``.safetensors``."""
    name = path.name
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        with TensorFile(path) as file:
            state = {k: file.get(k) for k in file.shapes}
    else:
        if not path.is_file():
            raise CheckpointError(f"{name}: no such file")
        data = load_pickle(path)
        if isinstance(data, dict) and isinstance(data.get("id_encoder"), dict):
            data = data["id_encoder"]
        if not isinstance(data, dict):
            raise CheckpointError(f"{name}: not a PhotoMaker file (the pickle holds no state dict)")
        state = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if any(k.startswith("id_encoder.") for k in state):
        state = {k.removeprefix("id_encoder."): v for k, v in state.items() if k.startswith("id_encoder.")}
    return state


def load_photomaker(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                    device: torch.device | str = "cpu") -> PhotoMaker:
    """Load a PhotoMaker v1 file; :class:`CheckpointError` with a one-line reason for anything else."""
    path, device = Path(path), torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    name = path.name
    state = _read_state(path)
    if any(k.startswith("qformer_perceiver.") for k in state):
        raise CheckpointError(f"{name}: a PhotoMaker v2 file; only v1 is supported (as ComfyUI's node)")
    if _PROJECTION_2 not in state or _FUSE + "layer_norm.weight" not in state:
        raise CheckpointError(f"{name}: not a PhotoMaker file (no {_PROJECTION_2} and {_FUSE}layer_norm)")
    with _as_checkpoint_errors(name):
        vision_state = {k: v for k, v in state.items() if k.startswith(_VISION_KEYS)}
        vision = load_clip_vision_from(vision_state, "", precision=dtypes, device=device, name=name)
        out_2, hidden = state[_PROJECTION_2].shape
        width = state[_FUSE + "layer_norm.weight"].shape[0]
        projection = vision.model.visual_projection.weight.shape[0]
        if projection + out_2 != width:
            raise CheckpointError(f"{name}: the projections ({projection} + {out_2}) do not add up to the fuse "
                                  f"module's width {width}")
        cast = {k: v.to(dtypes.text) for k, v in state.items()}
        projection_2 = _build(lambda: nn.Linear(hidden, out_2, bias=False), {"weight": cast[_PROJECTION_2]},
                              "PhotoMaker projection", name)
        fuse_state = {k.removeprefix(_FUSE): v for k, v in cast.items() if k.startswith(_FUSE)}
        fuse = _build(lambda: FuseModule(width), fuse_state, "PhotoMaker fuse module", name)
        unknown = sorted(set(state) - set(vision_state) - {_PROJECTION_2} - {_FUSE + k for k in fuse_state})
        if unknown:
            raise CheckpointError(f"{name}: unexpected PhotoMaker weights ({len(unknown)}, e.g. {unknown[0]!r})")
    return PhotoMaker(vision, projection_2.to(device), fuse.to(device))


# -- synthetic files (``noodlebox make-model --kind photomaker``) --------------------------------


def _text_widths(base: Path | None, size: str) -> tuple[int, int]:
    """clip_l and clip_g widths: the base checkpoint's, else SDXL's (64 and 64 for a tiny SDXL)."""
    if base is None:
        return (64, 64) if size == "tiny" else (768, 1280)
    from diffusion.detect import detect

    with TensorFile(base) as file:
        encoders = {spec.name: spec for spec in detect(file.shapes).text_encoders}
    if set(encoders) != {"clip_l", "clip_g"}:
        raise ValueError(f"PhotoMaker is made for SDXL; {base.name} has text encoders {sorted(encoders) or 'none'}")
    return int(encoders["clip_l"].config["hidden_size"]), int(encoders["clip_g"].config["hidden_size"])


def write_photomaker(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0, arch: str | None = None,
                     size: str = "tiny") -> Path:
    """A seeded random PhotoMaker v1 ``.bin`` (``{"id_encoder", "lora_weights"}``) for an SDXL ``base``.

    The projections are as wide as ``base``'s clip_l and clip_g; the vision tower is a 64-wide,
    two-layer ViT at 56 pixels (``tiny``) or ViT-L/14 at 224. ``lora_weights`` holds a PEFT-style
    UNet LoRA of ``rank`` for ``base`` (empty without one); nothing here reads it. Same arguments,
    same bytes.
    """
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from diffusion.synthetic import _random_tensor

    if arch not in (None, "v1"):
        raise ValueError(f"unknown PhotoMaker version {arch!r}; only v1 is written")
    width_l, width_g = _text_widths(base, size)
    hidden, layers, mlp, image_size = (64, 2, 128, 56) if size == "tiny" else (1024, 24, 4096, 224)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), patch_size=14, image_size=image_size,
                              projection_dim=width_l, hidden_act="quick_gelu" if hidden == 1024 else "gelu")
    with init_empty_weights():
        parts: dict[str, nn.Module] = {"": CLIPVisionModelWithProjection(config),
                                       _FUSE: FuseModule(width_l + width_g)}
    shapes = {prefix + k: tuple(v.shape) for prefix, m in parts.items() for k, v in m.state_dict().items()}
    shapes[_PROJECTION_2] = (width_g, hidden)
    id_encoder = {k: _random_tensor(f"photomaker.{k}", shape, seed).half() for k, shape in sorted(shapes.items())}
    lora: dict[str, torch.Tensor] = {}
    if base is not None:
        from diffusion.lora.synthetic import lora_tensors

        tensors = lora_tensors(base, "diffusers-lora", rank, seed)
        lora = {k: v.half() for k, v in tensors.items() if k.startswith("unet.")}
    buffer = io.BytesIO()  # saved through a buffer: the archive's inner name would otherwise follow the file name
    torch.save({"id_encoder": id_encoder, "lora_weights": lora}, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return out


__all__ = ["TRIGGER", "FuseModule", "PhotoMaker", "encode_photomaker", "load_photomaker", "photomaker_tokens",
           "trigger_word_id", "write_photomaker"]
