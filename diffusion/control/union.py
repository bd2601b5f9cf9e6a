"""Union ControlNets (xinsir's ControlNet++ "union" / "promax"): one ControlNet for many control types.

A union file is a diffusers-layout SDXL ControlNet plus four parts of its own (the names of
the released files): ``task_embedding`` (one 320-wide vector per control type),
``transformer_layes.N`` (residual attention blocks: ``attn.in_proj_weight``, ``ln_1``,
``mlp.c_fc``/``mlp.c_proj`` with QuickGELU, ``ln_2``), ``spatial_ch_projs`` (a 320 -> 320
linear) and ``control_add_embedding`` (``linear_1``/``linear_2`` from a 256-wide sinusoid per
type to the time embedding). What it does at each call, as ComfyUI runs it:

- the time embedding gets ``control_add_embedding`` of the one-hot control type (all zeros
  for ``auto``), each of its entries embedded as a timestep (cos then sin, 256 wide);
- with a control type set, the hint's embedding ``c`` (the ordinary hint block) is fused:
  ``c + spatial_ch_projs(blocks(mean(c) + task_embedding[type]))``, over one token (the
  hint's), broadcast over the image; with ``auto`` the hint's embedding is used as it is.

:class:`UnionParts` holds those parts; :func:`union_call` runs a diffusers ``ControlNetModel``
with them (forward hooks on its time embedding and hint embedding, for the one call).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from diffusion.control.style import ResidualBlock

#: The control types of union models, in the order of their ``task_embedding`` rows (8 in promax, 6 before).
UNION_TYPES = ("openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal",
               "segment", "tile", "repaint")
#: Key starts of the union parts (the rest of a union file is an ordinary diffusers ControlNet).
UNION_KEYS = ("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")
MARKER = "control_add_embedding.linear_1.weight"
#: Width of the sinusoid each control-type entry is embedded with.
TYPE_EMBED_DIM = 256


class _AddEmbedding(nn.Module):
    def __init__(self, types: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(TYPE_EMBED_DIM * types, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)


class UnionParts(nn.Module):
    """A union ControlNet's own parts: task embeddings, the fusing transformer and the type embedding."""

    def __init__(self, types: int, width: int, time_dim: int, layers: int = 1) -> None:
        super().__init__()
        self.task_embedding = nn.Parameter(torch.zeros(types, width))
        self.transformer_layes = nn.Sequential(*[ResidualBlock(width, 8) for _ in range(layers)])
        self.spatial_ch_projs = nn.Linear(width, width)
        self.control_add_embedding = _AddEmbedding(types, time_dim)

    @property
    def types(self) -> int:
        """How many control types the model knows (its ``task_embedding`` rows)."""
        return int(self.task_embedding.shape[0])

    def type_embedding(self, index: int | None) -> torch.Tensor:
        """What the time embedding gets for control type ``index`` (None: auto), ``[1, time_dim]``."""
        one_hot = torch.zeros(self.types, device=self.task_embedding.device)
        if index is not None:
            one_hot[index] = 1.0
        sinusoid = get_timestep_embedding(one_hot, TYPE_EMBED_DIM, flip_sin_to_cos=True, downscale_freq_shift=0)
        sinusoid = sinusoid.to(self.task_embedding.dtype).reshape(1, -1)
        embed = self.control_add_embedding
        return embed.linear_2(nn.functional.silu(embed.linear_1(sinusoid)))

    def fuse(self, hint: torch.Tensor, index: int) -> torch.Tensor:
        """The hint embedding ``[B, C, H, W]`` fused with control type ``index``."""
        tokens = (hint.mean(dim=(2, 3)) + self.task_embedding[index].to(hint.dtype))[:, None]
        alpha = self.spatial_ch_projs(self.transformer_layes(tokens)[:, 0])
        return hint + alpha[:, :, None, None]


def is_union(keys: Mapping[str, object] | set[str]) -> bool:
    """Whether a (prefix-free) ControlNet state holds a union model's parts."""
    return MARKER in keys and "task_embedding" in keys


def split_union(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(ControlNet weights, union weights)`` of a union file."""
    own = {k: v for k, v in state.items() if k.startswith(UNION_KEYS)}
    return {k: v for k, v in state.items() if k not in own}, own


def union_parts(state: Mapping[str, torch.Tensor], dtype: torch.dtype, device: torch.device) -> UnionParts:
    """Build :class:`UnionParts` from a union file's own weights (shapes give the sizes)."""
    types, width = state["task_embedding"].shape
    layers = len({m[1] for k in state if (m := re.match(r"transformer_layes\.(\d+)\.", k))})
    time_dim = state[MARKER].shape[0]
    if state[MARKER].shape[1] != TYPE_EMBED_DIM * types:
        raise ValueError(f"control_add_embedding reads {state[MARKER].shape[1]} values, expected "
                         f"{TYPE_EMBED_DIM} x {types} control types")
    parts = UnionParts(int(types), int(width), int(time_dim), max(1, layers))
    missing, unexpected = parts.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"union ControlNet parts do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return parts.to(device, dtype)


def type_index(name: str | None, parts: UnionParts) -> int | None:
    """The ``task_embedding`` row of a SetUnionControlNetType choice (None for auto), or a one-line error."""
    if name is None or name == "auto":
        return None
    if name not in UNION_TYPES:
        raise ValueError(f"unknown union control type {name!r}; expected auto or one of {', '.join(UNION_TYPES)}")
    index = UNION_TYPES.index(name)
    if index >= parts.types:
        raise ValueError(f"this union ControlNet knows {parts.types} control types; {name!r} is not one of them "
                         f"({', '.join(UNION_TYPES[:parts.types])})")
    return index


_CALL_LOCK = threading.Lock()


@contextmanager
def union_call(controlnet: nn.Module, parts: UnionParts, type_name: str | None) -> Iterator[None]:
    """For the calls inside: ``controlnet`` (a diffusers ``ControlNetModel``) runs as the union model set to
    ``type_name``. Calls are serialised: the hooks are on the shared module."""
    index = type_index(type_name, parts)

    def add_type(_module: nn.Module, _args: object, out: torch.Tensor) -> torch.Tensor:
        return out + parts.type_embedding(index).to(out.dtype)

    def fuse(_module: nn.Module, _args: object, out: torch.Tensor) -> torch.Tensor:
        return parts.fuse(out, index) if index is not None else out

    with _CALL_LOCK:
        handles = [controlnet.time_embedding.register_forward_hook(add_type),
                   controlnet.controlnet_cond_embedding.register_forward_hook(fuse)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
