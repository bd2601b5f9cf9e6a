"""ComfyUI's attention patch points on diffusers' UNet2DConditionModel, for one UNet call.

In ComfyUI's transformer block, for self-attention (``attn1``) and then cross-attention
(``attn2``), with ``extra_options`` = the call's ``transformer_options`` (less ``patches`` and
``patches_replace``) plus ``block``, ``block_index``, ``transformer_index``, ``original_shape``,
``n_heads``, ``dim_head``:

1. each ``patches["attnN_patch"]`` gets ``(n, context, value, extra_options)``, the normed hidden
   states and what the keys and values are projected from (``n`` itself for self-attention,
   the text conditioning for cross-attention), and returns the three, before the projections;
2. ``patches_replace["attnN"][(block_name, number, block_index)]`` (or ``[(block_name, number)]``)
   gets the projected ``(q, k, v, extra_options)`` ([B, tokens, heads * dim_head]) and returns the
   attention's result, which then goes through the output projection; without one, plain attention;
3. each ``patches["attnN_output_patch"]`` gets ``(out, extra_options)`` after the output
   projection, before the residual is added.

``block`` is ``("input" | "middle" | "output", LDM block number)`` and ``block_index`` the
transformer's index inside its spatial transformer; ``transformer_index`` counts the spatial
transformers in the order they run. :func:`attention_patches` swaps the processor of each
``Attention`` module that has something to run and puts the old one back afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_PATCH_KINDS = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention over ``heads`` heads of [B, tokens, heads * dim_head] tensors (same layout out)."""
    batch, inner = q.shape[0], k.shape[-1]
    dim_head = inner // heads
    q, k, v = (t.view(batch, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, heads * dim_head).to(q.dtype)


def spatial_transformers(unet: nn.Module) -> list[tuple[tuple[str, int], nn.Module]]:
    """``((block name, LDM block number), Transformer2DModel)`` in the order the UNet runs them."""
    per_level = unet.config["layers_per_block"]
    found: list[tuple[tuple[str, int], nn.Module]] = []
    for level, block in enumerate(unet.down_blocks):
        for j, module in enumerate(getattr(block, "attentions", None) or ()):
            found.append((("input", 1 + level * (per_level + 1) + j), module))
    found.extend((("middle", 0), module) for module in getattr(unet.mid_block, "attentions", None) or ())
    for number, block in enumerate(unet.up_blocks):
        for j, module in enumerate(getattr(block, "attentions", None) or ()):
            found.append((("output", number * (per_level + 1) + j), module))
    return found


def attention_modules(unet: nn.Module) -> Iterator[tuple[str, dict[str, Any], nn.Module]]:
    """``("attn1" | "attn2", its block facts, Attention module)`` for every transformer block of ``unet``."""
    for transformer_index, (block, transformer) in enumerate(spatial_transformers(unet)):
        for block_index, layer in enumerate(transformer.transformer_blocks):
            facts = {"block": block, "block_index": block_index, "transformer_index": transformer_index}
            for name in ("attn1", "attn2"):
                module = getattr(layer, name, None)
                if module is not None:
                    yield name, facts, module


def _replacement(replace: Mapping[Any, Any], facts: Mapping[str, Any]) -> Any:
    block = facts["block"]
    return replace.get((block[0], block[1], facts["block_index"]), replace.get(block))


@contextmanager
def attention_patches(unet: nn.Module, transformer_options: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the attention patches of ``transformer_options`` during one forward of ``unet`` (none: nothing changed)."""
    options = transformer_options or {}
    patches = options.get("patches", {})
    replace = options.get("patches_replace", {})
    if not any(patches.get(kind) for kind in _PATCH_KINDS) and not (replace.get("attn1") or replace.get("attn2")):
        yield
        return
    base = {k: v for k, v in options.items() if k not in ("patches", "patches_replace")}
    shape: list[list[int]] = [[]]
    swapped: list[tuple[nn.Module, Any]] = []

    def remember_shape(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = args[0] if args else kwargs["sample"]
        shape[0] = list(sample.shape)

    handle = unet.register_forward_pre_hook(remember_shape, with_kwargs=True)
    try:
        for name, facts, module in attention_modules(unet):
            before = patches.get(f"{name}_patch", ())
            after = patches.get(f"{name}_output_patch", ())
            replaced = _replacement(replace.get(name, {}), facts)
            if not before and not after and replaced is None:
                continue
            inner = module.to_q.out_features
            extra = {**base, **facts, "n_heads": module.heads, "dim_head": inner // module.heads,
                     "attn_precision": None}  # ComfyUI's key: None is its default precision
            swapped.append((module, module.processor))
            module.processor = _PatchedProcessor(list(before), replaced, list(after), extra, shape)
        yield
    finally:
        handle.remove()
        for module, processor in reversed(swapped):
            module.processor = processor


class _PatchedProcessor:
    """A diffusers attention processor running ComfyUI's patch points (plain attention where none applies)."""

    def __init__(self, before: list[Callable[..., Any]], replaced: Callable[..., torch.Tensor] | None,
                 after: list[Callable[..., torch.Tensor]], extra: dict[str, Any], shape: list[list[int]]) -> None:
        self.before, self.replaced, self.after = before, replaced, after
        self.extra, self.shape = extra, shape

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        """Patches, projections, attention (or its replacement), output projection, output patches."""
        if hidden_states.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None \
                or attn.norm_q is not None:
            raise ValueError("attention patches need a transformer block's attention (tokens in, no norms inside)")
        extra = {**self.extra, "original_shape": list(self.shape[0])}
        n = hidden_states
        context = n if encoder_hidden_states is None else encoder_hidden_states
        value = context
        for patch in self.before:
            n, context, value = patch(n, context, value, extra)
        q, k, v = attn.to_q(n), attn.to_k(context), attn.to_v(value)
        if self.replaced is not None:
            out = self.replaced(q, k, v, extra)
        else:
            mask = None
            if attention_mask is not None:
                mask = attn.prepare_attention_mask(attention_mask, k.shape[1], k.shape[0])
                mask = mask.view(k.shape[0], attn.heads, -1, mask.shape[-1])
            out = attention(q, k, v, attn.heads, mask)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        out = out / attn.rescale_output_factor
        for patch in self.after:
            out = patch(out, extra)
        return out


def side_prediction(args: Mapping[str, Any], side: str, x: torch.Tensor,
                    model_options: Mapping[str, Any]) -> torch.Tensor:
    """One conditioning's (``side`` "cond" or "uncond" of a post-CFG hook's args) denoised prediction of ``x``.

    One more UNet pass (ComfyUI's ``calc_cond_batch`` on that one list) under ``model_options``.
    """
    from diffusion.denoiser import Denoiser  # the denoiser runs these patches: imported at call time

    conds = args[side] or []
    positive, negative = (conds, []) if side == "cond" else ([], conds)
    denoiser = Denoiser(args["model"], positive, negative, 1.0, x.shape)
    return denoiser.predict(x, args["sigma"], [0 if side == "cond" else 1], model_options)[0]


def value_only(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Mapping[str, Any]) -> torch.Tensor:
    """A self-attention replaced by its values (every token attends to itself only): PAG's perturbation."""
    return v


def perturbed_attention_guidance(scale: float) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """A post-CFG hook adding ``scale * (cond - cond with the middle block's self-attention perturbed)``."""
    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        result = args["denoised"]
        if scale == 0:
            return result
        options = with_replacement(args["model_options"], "attn1", ("middle", 0, 0), value_only)
        perturbed = side_prediction(args, "cond", args["input"], options)
        return result + (args["cond_denoised"] - perturbed) * scale

    return post_cfg


def with_replacement(model_options: Mapping[str, Any], name: str, key: tuple[str, int, int],
                      fn: Callable[..., torch.Tensor]) -> dict[str, Any]:
    """A copy of ``model_options`` whose ``patches_replace[name][key]`` is ``fn`` (the rest shared, not changed)."""
    transformer = dict(model_options.get("transformer_options", {}))
    replace = dict(transformer.get("patches_replace", {}))
    replace[name] = {**replace.get(name, {}), key: fn}
    transformer["patches_replace"] = replace
    return {**model_options, "transformer_options": transformer}
