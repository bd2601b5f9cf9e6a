"""Adding control residuals to a diffusers ``UNet2DConditionModel`` call, where ComfyUI adds them.

ControlNet residuals go through diffusers' own arguments (``down_block_additional_residuals``
are added to the skip connections, ``mid_block_additional_residual`` to the middle block's
output), which is where ComfyUI adds its ``output`` and ``middle`` control.

T2I-Adapter features do not: diffusers' ``down_intrablock_additional_residuals`` skips the
skip connection of a down block without attention, where ComfyUI's ``input`` control is in
both the flow and the skip. So they are added by forward hooks, for one call only: after the
last attention layer of a down block that has attention (before its downsampler), after the
whole block otherwise (after its downsampler, if any), and after the middle block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from diffusion.control.models import Control, ControlModel, Residuals, UNetInput


def unet_levels(unet: nn.Module) -> tuple[int, ...]:
    """The output width of each down block of a diffusers UNet."""
    return tuple(int(c) for c in unet.config.block_out_channels)


def check_fits(model: ControlModel, unet: nn.Module, unet_arch: str) -> None:
    """Raise ``ValueError`` (one line) when a control model was made for another UNet than ``unet``."""
    levels = unet_levels(unet)
    context = int(unet.config.cross_attention_dim)
    fits = model.block_channels == levels and (model.context_dim is None or model.context_dim == context)
    if not fits:
        raise ValueError(f"the {model.describe()} does not fit this {unet_arch} model "
                         f"(levels {'/'.join(map(str, levels))}, cross-attention {context}); "
                         "load a control model made for it")


def spread_to_uncond(positive: Sequence[Sequence[Any]], negative: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The negative conditioning with the positive's "apply to uncond" controls copied onto it (ComfyUI's rule).

    Controls set by ControlNetApply (``control_apply_to_uncond``) on positive entries without an
    area also steer the negative side: when no negative entry without an area has a control of
    its own, the i-th such control goes on the (i mod n)-th negative entry without an area.
    """
    negative = [list(entry) for entry in negative]
    sources = [e[1]["control"] for e in positive
               if _opts(e).get("control_apply_to_uncond") and "area" not in _opts(e) and _opts(e).get("control")]
    plain = [i for i, e in enumerate(negative) if "area" not in _opts(e)]
    if not sources or not plain or any(_opts(negative[i]).get("control") is not None for i in plain):
        return negative
    for n, control in enumerate(sources):
        index = plain[n % len(plain)]
        options = dict(_opts(negative[index]))
        options["control"] = control
        if n < len(plain):
            negative[index] = [negative[index][0], options]
        else:
            negative.append([negative[index][0], options])
    return negative


def _opts(entry: Sequence[Any]) -> dict[str, Any]:
    return entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}


def controlnet_kwargs(residuals: Residuals, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """diffusers UNet keyword arguments for the ControlNet part of ``residuals``."""
    if residuals.down is None:
        return {}
    return {
        "down_block_additional_residuals": [r.to(device, dtype) for r in residuals.down],
        "mid_block_additional_residual": residuals.mid.to(device, dtype) if residuals.mid is not None else None,
    }


@contextmanager
def adapter_hooks(unet: nn.Module, residuals: Residuals | None) -> Iterator[None]:
    """Add ``residuals``' T2I-Adapter features inside ``unet`` while the block is active (None: nothing)."""
    if residuals is None or residuals.adapter is None:
        yield
        return
    blocks = list(unet.down_blocks)
    if len(residuals.adapter) != len(blocks):
        raise ValueError(f"the T2I-Adapter gives {len(residuals.adapter)} features for a UNet of {len(blocks)} levels")
    with ExitStack() as stack:
        for block, feature in zip(blocks, residuals.adapter, strict=True):
            attentions = getattr(block, "attentions", None)
            if attentions is not None and len(attentions) > 0:
                stack.enter_context(_hooked(attentions[-1], _add_to_first(feature)))
            else:
                stack.enter_context(_hooked(block, _add_to_block(feature)))
        if residuals.adapter_mid is not None:
            stack.enter_context(_hooked(unet.mid_block, _add_to_tensor(residuals.adapter_mid)))
        yield


@contextmanager
def _hooked(module: nn.Module, hook: Any) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _fit(feature: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if feature.shape[-2:] != like.shape[-2:] or feature.shape[1] != like.shape[1]:
        raise ValueError(f"a T2I-Adapter feature of shape {tuple(feature.shape)} does not fit the UNet's "
                         f"{tuple(like.shape)}; the adapter was made for another model")
    return feature.to(like.device, like.dtype)


def _add_to_first(feature: torch.Tensor) -> Any:
    """Hook for a transformer layer: add to its output tensor (diffusers returns a tuple or an output object)."""
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + _fit(feature, output[0]), *output[1:])
        if isinstance(output, torch.Tensor):
            return output + _fit(feature, output)
        output.sample = output.sample + _fit(feature, output.sample)
        return output
    return hook


def _add_to_block(feature: torch.Tensor) -> Any:
    """Hook for a down block without attention: add to its output and to its last skip connection."""
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden, skips = output
        added = hidden + _fit(feature, hidden)
        return added, (*skips[:-1], added)
    return hook


def _add_to_tensor(feature: torch.Tensor) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        return output + _fit(feature, output)
    return hook




def check_chain(control: Control, unet: Any) -> Control:
    """``control`` with every model of its chain made ready for ``unet`` (a ``UNetModel``) and checked to fit it.

    Raises ``ValueError`` (one line) for a control model made for another model.
    """
    from diffusion.control import sd3

    for link in control.chain():
        link.realized = link.model.for_model(unet)
        if link.realized.arch == sd3.ARCH or unet.arch in ("sd3", "flux"):
            sd3.check_fits(link.realized, unet.model, unet.arch)
        else:
            check_fits(link.realized, unet.model, unet.arch)
    return control


def call_residuals(control: Control, model_in: torch.Tensor, timesteps: torch.Tensor, sigma: torch.Tensor,
                   context: torch.Tensor, added_cond_kwargs: Mapping[str, torch.Tensor] | None, jobs: int,
                   percent_to_sigma: Callable[[float], float]) -> Residuals:
    """What ``control``'s chain adds to one UNet call of ``jobs`` stacked conditioning entries."""
    call = UNetInput(model_in, timesteps, float(sigma[0]), context,
                     dict(added_cond_kwargs) if added_cond_kwargs else None, max(1, jobs))
    return control.residuals(call, percent_to_sigma)
