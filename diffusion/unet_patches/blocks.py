"""ComfyUI's UNet block patches on diffusers' UNet2DConditionModel.

ComfyUI calls ``input_block_patch(h, transformer_options)`` after each input block (the
result is also the skip connection), ``input_block_patch_after_skip`` after the skip was
stored (only the continuation changes), and ``output_block_patch(h, hsp, transformer_options)``
before each output block concatenates ``h`` with its skip ``hsp``; ``transformer_options["block"]``
is ``("input" | "output", LDM block index)``. Here those run from forward hooks on the
diffusers modules that make up each LDM block, installed for one UNet call only
(:func:`block_patches`), so the shared module is left as it was. Output blocks run through
our own up-block loop for that call, since the join happens inside diffusers' block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MethodType
from typing import Any

import torch
from torch import nn

_KINDS = ("input_block_patch", "input_block_patch_after_skip", "output_block_patch")


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, value: torch.Tensor) -> Any:
    return (value, *output[1:]) if isinstance(output, tuple) else value


def input_blocks(unet: nn.Module) -> list[tuple[int, nn.Module, nn.Module | None]]:
    """``(LDM input block index, module ending that block, module starting the next)`` in forward order."""
    per_level = unet.config["layers_per_block"]
    ends: list[nn.Module] = [unet.conv_in]
    for block in unet.down_blocks:
        attentions = getattr(block, "attentions", None)
        for j, resnet in enumerate(block.resnets):
            ends.append(attentions[j] if attentions is not None and len(attentions) > j else resnet)
        if block.downsamplers is not None:
            ends.append(block.downsamplers[0])
    starts: list[nn.Module] = []
    for block in unet.down_blocks:
        starts.extend(block.resnets[j] for j in range(per_level))
        if block.downsamplers is not None:
            starts.append(block.downsamplers[0])
    starts.append(unet.mid_block)
    # The module after block k is the first module of block k + 1 (resnet, downsampler) or the middle block.
    return [(k, end, starts[k] if k < len(starts) else None) for k, end in enumerate(ends)]


def output_resnets(unet: nn.Module) -> list[tuple[int, nn.Module, int]]:
    """``(LDM output block index, the resnet that takes cat(h, hsp), h's channel count)``."""
    out = []
    previous = unet.config["block_out_channels"][-1]
    index = 0
    for block in unet.up_blocks:
        own = block.resnets[0].out_channels
        for j, resnet in enumerate(block.resnets):
            out.append((index, resnet, previous if j == 0 else own))
            index += 1
        previous = own
    return out


@contextmanager
def block_patches(unet: nn.Module, transformer_options: Mapping[str, Any] | None) -> Iterator[None]:
    """Run the block patches of ``transformer_options`` during one forward of ``unet`` (none: nothing installed)."""
    patches = (transformer_options or {}).get("patches", {})
    if not any(patches.get(kind) for kind in _KINDS):
        yield
        return
    options = dict(transformer_options or {})
    handles = []

    def run_input(kind: str, index: int, h: torch.Tensor) -> torch.Tensor:
        block_options = {**options, "block": ("input", index)}
        for patch in patches.get(kind, ()):
            h = patch(h, block_options)
        return h

    for index, end, after in input_blocks(unet):
        if patches.get("input_block_patch"):
            handles.append(end.register_forward_hook(_input_hook(run_input, index)))
        if patches.get("input_block_patch_after_skip") and after is not None:
            handles.append(after.register_forward_pre_hook(_after_skip_hook(run_input, index)))
    if patches.get("output_block_patch"):
        per_block = unet.config["layers_per_block"] + 1
        for number, block in enumerate(unet.up_blocks):
            block.forward = MethodType(_patched_up_forward(patches["output_block_patch"], options, number * per_block),
                                       block)
            handles.append(_InstanceForward(block))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _input_hook(run: Callable[[str, int, torch.Tensor], torch.Tensor], index: int) -> Callable[..., Any]:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        return _replace_first(output, run("input_block_patch", index, _first(output)))
    return hook


def _after_skip_hook(run: Callable[[str, int, torch.Tensor], torch.Tensor], index: int) -> Callable[..., Any]:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (run("input_block_patch_after_skip", index, args[0]), *args[1:])
    return hook


def _patched_pair(fns: list[Any], options: Mapping[str, Any], index: int, h: torch.Tensor,
                  hsp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    block_options = {**options, "block": ("output", index)}
    for fn in fns:
        h, hsp = fn(h, hsp, block_options)
    if h.shape[-2:] != hsp.shape[-2:]:
        raise ValueError(f"output block {index}: h is {tuple(h.shape[-2:])}, its skip {tuple(hsp.shape[-2:])}")
    return h, hsp


class _InstanceForward:
    """Undoes an instance-level ``forward`` override (``remove()``, like a hook handle)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)


def _patched_up_forward(fns: list[Any], options: Mapping[str, Any], first_index: int) -> Callable[..., torch.Tensor]:
    """An up block's forward (diffusers' UpBlock2D / CrossAttnUpBlock2D order) that patches each (h, skip) pair
    before they are joined, as ComfyUI's output blocks do; h may come back at another size than it went in."""
    def forward(self: nn.Module, hidden_states: torch.Tensor, res_hidden_states_tuple: tuple[torch.Tensor, ...],
                temb: torch.Tensor | None = None, encoder_hidden_states: torch.Tensor | None = None,
                cross_attention_kwargs: dict[str, Any] | None = None, upsample_size: int | None = None,
                attention_mask: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
                **_: Any) -> torch.Tensor:
        attentions = getattr(self, "attentions", None)
        for j, resnet in enumerate(self.resnets):
            hsp, res_hidden_states_tuple = res_hidden_states_tuple[-1], res_hidden_states_tuple[:-1]
            h, hsp = _patched_pair(fns, options, first_index + j, hidden_states, hsp)
            hidden_states = resnet(torch.cat([h, hsp], dim=1), temb)
            if attentions is not None:
                hidden_states = attentions[j](hidden_states, encoder_hidden_states=encoder_hidden_states,
                                              cross_attention_kwargs=cross_attention_kwargs,
                                              attention_mask=attention_mask,
                                              encoder_attention_mask=encoder_attention_mask, return_dict=False)[0]
        for upsampler in self.upsamplers or ():
            hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states

    return forward
