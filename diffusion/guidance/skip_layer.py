"""Skip-layer guidance (SLG) for the SD3/Flux transformers, as ComfyUI's SkipLayerGuidance nodes do it.

A skipped layer is a ``patches_replace["dit"]`` entry that returns the block's inputs
unchanged (:mod:`diffusion.unet_patches.dit_blocks`). Two forms:

- :func:`skip_layer_guidance`, a post-CFG hook: while ``sigma_end < sigma <= sigma_start``
  one more pass of the positive conditioning with the layers skipped gives ``skipped`` and
  ``result += (cond - skipped) * scale``; a ``rescaling_scale`` r then multiplies the result by
  ``r * std(cond) / std(result) + (1 - r)`` (stds over the whole batch);
- :func:`skip_layers_in_uncond`, a ``sampler_calc_cond_batch_function``: in the range the
  negative prediction is computed with the layers skipped (no extra pass).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from diffusion.unet_patches.attention import side_prediction
from diffusion.unet_patches.dit_blocks import DOUBLE, SINGLE

Hook = Callable[[Mapping[str, Any]], Any]


def parse_layers(text: str) -> list[int]:
    """The layer numbers in ``text`` (every run of digits, as ComfyUI reads "7, 8, 9")."""
    return [int(found) for found in re.findall(r"\d+", text)]


def skip_block(args: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A block replacement that skips the block: its inputs come out unchanged."""
    return args


def skip_layer_options(model_options: Mapping[str, Any], double: Sequence[int],
                       single: Sequence[int]) -> dict[str, Any]:
    """A copy of ``model_options`` whose ``dit`` replacements also skip these double and single blocks."""
    transformer = dict(model_options.get("transformer_options", {}))
    replace = dict(transformer.get("patches_replace", {}))
    dit = dict(replace.get("dit", {}))
    dit.update({(DOUBLE, i): skip_block for i in double})
    dit.update({(SINGLE, i): skip_block for i in single})
    replace["dit"] = dit
    transformer["patches_replace"] = replace
    return {**model_options, "transformer_options": transformer}


def _in_range(sigma: torch.Tensor, sigma_start: float, sigma_end: float) -> bool:
    s = float(sigma[0])
    return sigma_end < s <= sigma_start


def skip_layer_guidance(double: Sequence[int], single: Sequence[int], scale: float, sigma_start: float,
                        sigma_end: float, rescaling_scale: float = 0.0) -> Hook:
    """The post-CFG hook of SkipLayerGuidanceDiT / SkipLayerGuidanceSD3 (see the module docstring)."""
    double, single = tuple(double), tuple(single)

    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        result = args["denoised"]
        if scale <= 0 or not _in_range(args["sigma"], sigma_start, sigma_end):
            return result
        options = skip_layer_options(args["model_options"], double, single)
        cond = args["cond_denoised"]
        skipped = side_prediction(args, "cond", args["input"], options)
        result = result + (cond - skipped) * scale
        if rescaling_scale != 0:
            factor = cond.std() / result.std()
            result = result * (rescaling_scale * factor + (1 - rescaling_scale))
        return result

    return post_cfg


def skip_layers_in_uncond(double: Sequence[int], single: Sequence[int], sigma_start: float,
                          sigma_end: float) -> Hook:
    """The ``sampler_calc_cond_batch_function`` of SkipLayerGuidanceDiTSimple (see the module docstring).

    It gets ``{"conds": [positive, negative], "input", "sigma", "model", "model_options",
    "calc_cond_batch"}``, ``calc_cond_batch(conds, x, sigma, model_options)`` being the
    sampler's own prediction of each list (None: skipped).
    """
    double, single = tuple(double), tuple(single)

    def calc(args: Mapping[str, Any]) -> list[torch.Tensor]:
        x, sigma, options, batch = args["input"], args["sigma"], args["model_options"], args["calc_cond_batch"]
        cond, uncond = args["conds"]
        if uncond is None or not _in_range(sigma, sigma_start, sigma_end):
            return batch(args["conds"], x, sigma, options)
        cond_out = batch([cond, None], x, sigma, options)[0]
        uncond_out = batch([None, uncond], x, sigma, skip_layer_options(options, double, single))[1]
        return [cond_out, uncond_out]

    return calc
