"""T2I-Adapter style models (STYLE_MODEL): CLIP vision tokens turned into extra prompt tokens.

The file (``style_embedding``, ``proj``, ``ln_pre``/``ln_post``, ``transformer_layes.N.*``) holds a
small CLIP-style transformer: the image's last hidden states plus ``num_token`` learned tokens
go through it, and the learned tokens come out projected to the text encoder's width. Their
shapes give width, token count, depth and output width; heads are not in the weights (a head
dimension of 128, the 8 heads of the released 1024-wide model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build
from diffusion.precision import Precision, resolve_precision

HEAD_DIM = 128


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    """A pre-norm transformer block with CLIP's parameter names (the style model's and the union ControlNet's)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapter(nn.Module):
    """The style model: ``forward(hidden_states [B, N, width]) -> tokens [B, num_token, context_dim]``."""

    def __init__(self, width: int, context_dim: int, layers: int, num_token: int) -> None:
        super().__init__()
        heads = max(1, width // HEAD_DIM)
        self.transformer_layes = nn.Sequential(*[ResidualBlock(width, heads) for _ in range(layers)])
        self.style_embedding = nn.Parameter(torch.zeros(1, num_token, width))
        self.ln_post = nn.LayerNorm(width)
        self.ln_pre = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        tokens = self.style_embedding.expand(hidden.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([hidden, tokens], dim=1))
        x = self.transformer_layes(x)
        return self.ln_post(x[:, -tokens.shape[1]:]) @ self.proj


@dataclass(eq=False)
class StyleModel:
    """A loaded style model and where it runs."""

    model: StyleAdapter
    device: torch.device
    dtype: torch.dtype

    def tokens(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The prompt tokens for CLIP vision hidden states ([B, N, width] -> [B, num_token, context_dim], float32)."""
        width = self.model.proj.shape[0]
        if last_hidden_state.shape[-1] != width:
            raise ValueError(f"the style model reads {width}-wide CLIP vision states, not {last_hidden_state.shape[-1]}"
                             "-wide ones: use the CLIP vision model it was made for")
        with torch.no_grad():
            return self.model(last_hidden_state.to(self.device, self.dtype)).float().cpu()


def load_style_model(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                     device: torch.device | str = "cpu") -> StyleModel:
    """Load a T2I style adapter; :class:`CheckpointError` with a one-line reason for any other file."""
    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        shapes, name = file.shapes, file.path.name
        if "style_embedding" not in shapes or "proj" not in shapes:
            raise CheckpointError(f"{name}: not a style model (no style_embedding); only T2I style adapters are read")
        _, num_token, width = shapes["style_embedding"]
        layers = len({m[1] for k in shapes if (m := re.match(r"transformer_layes\.(\d+)\.", k))})
        state = file.read("", dtypes.text)
        model = _build(lambda: StyleAdapter(width, shapes["proj"][1], layers, num_token), state, "style model", name)
        return StyleModel(model.to(device), device, dtypes.text)
