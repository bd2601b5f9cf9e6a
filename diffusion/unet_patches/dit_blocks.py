"""Block replacements on the SD3/Flux transformers (ComfyUI's ``patches_replace["dit"]``).

``transformer_options["patches_replace"]["dit"][(kind, index)]`` replaces one block of a
diffusers ``SD3Transformer2DModel`` / ``FluxTransformer2DModel`` during a forward pass:

- ``("double_block", i)``: SD3's joint block ``i`` (ComfyUI's ``joint_blocks.i``) or Flux's
  double block ``i`` (``transformer_blocks.i`` in diffusers' names);
- ``("single_block", i)``: Flux's single block ``i`` (``single_transformer_blocks.i``).

The patch is called ``fn(args, extra)`` as ComfyUI calls it. ``args`` holds the block's
inputs: ``img`` (image tokens), ``txt`` (text tokens; a single block gets them in front
of the image tokens inside ``img``, as in ComfyUI, and no ``txt``), ``vec`` (the
conditioning vector), ``pe`` (Flux's rotary embedding, None for SD3) and
``transformer_options``. ``extra`` holds ``original_block`` (``args -> outputs``, the block
itself) and ``transformer_options``. It returns ``{"img", "txt"}`` (a single block:
``{"img"}``). A patch returning ``args`` unchanged skips the block (skip-layer guidance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

DOUBLE, SINGLE = "double_block", "single_block"
#: Where each kind of block lives on the diffusers transformers.
_LISTS = {DOUBLE: "transformer_blocks", SINGLE: "single_transformer_blocks"}

BlockPatch = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def dit_replacements(transformer_options: Mapping[str, Any] | None) -> dict[tuple[str, int], BlockPatch]:
    """The ``(kind, index) -> patch`` entries of ``transformer_options["patches_replace"]["dit"]``."""
    return dict((transformer_options or {}).get("patches_replace", {}).get("dit", {}))


def block_counts(transformer: nn.Module) -> dict[str, int]:
    """How many double and single blocks a transformer has (SD3: its joint blocks, no single blocks)."""
    return {kind: len(getattr(transformer, name, ())) for kind, name in _LISTS.items()}


def _transformer(module: nn.Module) -> nn.Module:
    """The diffusers transformer behind the sampler's call wrapper (``.inner``), or ``module`` itself."""
    return getattr(module, "inner", module)


@contextmanager
def dit_block_patches(module: nn.Module, transformer_options: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the ``dit`` block replacements of ``transformer_options`` during one forward of ``module``.

    Nothing is installed without replacements or on a model without transformer blocks (a UNet).
    A replacement for a block the model does not have is a ValueError.
    """
    replace = dit_replacements(transformer_options)
    transformer = _transformer(module)
    if not replace or not hasattr(transformer, "transformer_blocks"):
        yield
        return
    counts = block_counts(transformer)
    for kind, index in replace:
        if kind not in counts or not 0 <= index < counts[kind]:
            raise ValueError(f"this model has no {kind} {index} (it has {counts[DOUBLE]} double and "
                             f"{counts[SINGLE]} single blocks)")
    options = dict(transformer_options or {})
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for (kind, index), patch in replace.items():
            block = getattr(transformer, _LISTS[kind])[index]
            saved.append((block, block.__dict__.get("forward")))
            make = _single_forward if kind == SINGLE else _double_forward
            block.forward = make(block.forward, patch, options)  # type: ignore[method-assign]
        yield
    finally:
        for block, before in reversed(saved):
            if before is None:
                del block.forward  # back to the class's forward
            else:
                block.forward = before  # type: ignore[method-assign]


def _double_forward(original: Callable[..., Any], patch: BlockPatch, options: dict[str, Any]) -> Callable[..., Any]:
    """A double (joint) block's forward that hands its inputs to ``patch``; returns ``(txt, img)`` as diffusers."""

    def forward(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        def original_block(args: Mapping[str, Any]) -> dict[str, Any]:
            txt, img = original(hidden_states=args["img"], encoder_hidden_states=args["txt"], temb=args["vec"],
                                **kwargs)
            return {"img": img, "txt": txt}

        args = {"img": hidden_states, "txt": encoder_hidden_states, "vec": temb,
                "pe": kwargs.get("image_rotary_emb"), "transformer_options": options}
        out = patch(args, {"original_block": original_block, "transformer_options": options})
        return out["txt"], out["img"]

    return forward


def _single_forward(original: Callable[..., Any], patch: BlockPatch, options: dict[str, Any]) -> Callable[..., Any]:
    """A Flux single block's forward: the patch sees text and image tokens joined, as in ComfyUI."""

    def forward(hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        text_tokens = encoder_hidden_states.shape[1]

        def original_block(args: Mapping[str, Any]) -> dict[str, Any]:
            joined = args["img"]
            txt, img = original(hidden_states=joined[:, text_tokens:], encoder_hidden_states=joined[:, :text_tokens],
                                temb=args["vec"], **kwargs)
            return {"img": torch.cat([txt, img], dim=1)}

        args = {"img": torch.cat([encoder_hidden_states, hidden_states], dim=1), "vec": temb,
                "pe": kwargs.get("image_rotary_emb"), "transformer_options": options}
        joined = patch(args, {"original_block": original_block, "transformer_options": options})["img"]
        return joined[:, :text_tokens], joined[:, text_tokens:]

    return forward
