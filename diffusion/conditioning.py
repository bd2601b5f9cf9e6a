"""CONDITIONING values: encoding prompts into them and editing their entries.

A conditioning is ComfyUI's list of ``[cond, options]`` pairs: ``cond`` is the text
encoder's output ``[1, tokens, dim]`` and ``options`` a dict that carries at least
``pooled_output`` plus whatever later nodes add (``area``, ``strength``, SDXL's size
conditioning...). Conditionings are values shared between nodes and cached between
prompts, so every edit here returns new lists and copied dicts and never touches the
input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from diffusion.text import ClipTextEncoder, EmbeddingDirs

#: ``[[cond, {"pooled_output": pooled, ...}], ...]``
Conditioning = list[list[Any]]


def from_encoding(cond: torch.Tensor, pooled: torch.Tensor, extra: Mapping[str, Any] | None = None) -> Conditioning:
    """The one-entry conditioning of an encoded prompt, with ``extra`` keys beside ``pooled_output``."""
    return [[cond, {"pooled_output": pooled, **(extra or {})}]]


def encode_text(
    clip: ClipTextEncoder, text: str, embedding_dirs: EmbeddingDirs = (), extra: Mapping[str, Any] | None = None
) -> Conditioning:
    """Encode ``text`` with every stream of ``clip`` (``CLIPTextEncode``, ``CLIPTextEncodeSDXLRefiner``)."""
    cond, pooled = clip.encode(text, embedding_dirs=embedding_dirs)
    return from_encoding(cond, pooled, _with_hooks(clip, extra))


def _with_hooks(clip: ClipTextEncoder, extra: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``extra`` plus the CLIP's conditioning hooks (``SetClipHooks`` with ``apply_to_conds``)."""
    if clip.cond_hooks is None:
        return extra
    return {**(extra or {}), "hooks": clip.cond_hooks}


def encode_sdxl(
    clip: ClipTextEncoder,
    text_g: str,
    text_l: str,
    embedding_dirs: EmbeddingDirs = (),
    extra: Mapping[str, Any] | None = None,
) -> Conditioning:
    """Encode ``text_g`` with clip_g and ``text_l`` with clip_l (``CLIPTextEncodeSDXL``).

    The two streams are concatenated on the feature axis, so they must have as many
    77-token chunks: the shorter one is padded with chunks of the empty prompt, as
    ComfyUI does.
    """
    keys = {spec.key for spec in clip.streams}
    if keys != {"l", "g"}:
        raise ValueError(f"CLIPTextEncodeSDXL needs an SDXL CLIP with clip_l and clip_g; this one is {clip.kind!r}")
    tokens = clip.tokenize(text_g, embedding_dirs)
    tokens["l"] = clip.tokenize(text_l, embedding_dirs)["l"]
    if len(tokens["l"]) != len(tokens["g"]):
        empty = clip.tokenize("", embedding_dirs)
        while len(tokens["l"]) < len(tokens["g"]):
            tokens["l"] = tokens["l"] + empty["l"]
        while len(tokens["g"]) < len(tokens["l"]):
            tokens["g"] = tokens["g"] + empty["g"]
    cond, pooled = clip.encode_tokens(tokens)
    return from_encoding(cond, pooled, _with_hooks(clip, extra))


def set_values(conditioning: Sequence[Sequence[Any]], values: Mapping[str, Any]) -> Conditioning:
    """A copy of ``conditioning`` with ``values`` set in every entry's options (the tensors are shared)."""
    return [[entry[0], {**entry[1], **values}] for entry in conditioning]


def zero_out(conditioning: Sequence[Sequence[Any]]) -> Conditioning:
    """A copy with every cond tensor, and every ``pooled_output`` there is, replaced by zeros."""
    out: Conditioning = []
    for cond, options in conditioning:
        options = dict(options)
        for key in ("pooled_output", "conditioning_lyrics"):
            if options.get(key) is not None:
                options[key] = torch.zeros_like(options[key])
        out.append([torch.zeros_like(cond), options])
    return out


def average(to: Sequence[Sequence[Any]], source: Sequence[Sequence[Any]], to_strength: float) -> Conditioning:
    """Each entry of ``to`` mixed with ``source``'s first entry: ``to * s + source * (1 - s)`` (ConditioningAverage).

    ``source``'s tokens are cut or zero-padded to each entry's length; pooled outputs are
    mixed the same way (an entry without one takes ``source``'s). Only the first entry of
    ``source`` counts, as in ComfyUI.
    """
    if not source:
        raise ValueError("conditioning_from is empty: there is nothing to average with")
    cond_from = source[0][0]
    pooled_from = source[0][1].get("pooled_output")
    out: Conditioning = []
    for cond, options in to:
        if cond_from.shape[-1] != cond.shape[-1]:
            raise ValueError(f"conditionings of width {cond.shape[-1]} and {cond_from.shape[-1]} cannot be averaged")
        part = cond_from[:, :cond.shape[1]]
        if part.shape[1] < cond.shape[1]:
            padding = torch.zeros((part.shape[0], cond.shape[1] - part.shape[1], cond.shape[2]), dtype=part.dtype)
            part = torch.cat([part, padding], dim=1)
        options = dict(options)
        pooled_to = options.get("pooled_output", pooled_from)
        if pooled_from is not None and pooled_to is not None:
            options["pooled_output"] = pooled_to * to_strength + pooled_from * (1.0 - to_strength)
        elif pooled_from is not None:
            options["pooled_output"] = pooled_from
        out.append([cond * to_strength + part * (1.0 - to_strength), options])
    return out


def concat(to: Sequence[Sequence[Any]], source: Sequence[Sequence[Any]]) -> Conditioning:
    """Each entry of ``to`` with ``source``'s first entry's tokens appended (ConditioningConcat)."""
    if not source:
        raise ValueError("conditioning_from is empty: there is nothing to concatenate")
    cond_from = source[0][0]
    out: Conditioning = []
    for cond, options in to:
        if cond_from.shape[-1] != cond.shape[-1]:
            raise ValueError(f"conditionings of width {cond.shape[-1]} and {cond_from.shape[-1]} "
                             "cannot be concatenated")
        out.append([torch.cat((cond, cond_from.to(cond)), dim=1), dict(options)])
    return out
