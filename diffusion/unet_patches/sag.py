"""Self-attention guidance (SAG): guidance away from a blurred copy of where the model attends.

The middle block's self-attention of the negative pass is recorded; the tokens that many
queries attend to (summed head-averaged weight above 1) mark the regions that matter. The
negative prediction is blurred there, noised back with the step's noise, and denoised once
more; the difference to the blurred copy, times the scale, is added to the CFG result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from diffusion.unet_patches.attention import attention, side_prediction, with_replacement

#: The blur kernel's width, in latent pixels.
BLUR_KERNEL = 9
#: Summed attention a token needs to be blurred.
THRESHOLD = 1.0


def attention_weights(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention weights [B * heads, queries, keys] of [B, tokens, heads * dim_head] tensors."""
    batch, _, inner = q.shape
    dim_head = inner // heads
    q, k = (t.reshape(batch, -1, heads, dim_head).permute(0, 2, 1, 3).reshape(batch * heads, -1, dim_head)
            for t in (q, k))
    return (torch.bmm(q.float(), k.float().transpose(1, 2)) * dim_head ** -0.5).softmax(dim=-1)


def gaussian_blur(image: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of [B, C, H, W] with reflected borders."""
    half = (kernel_size - 1) * 0.5
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, steps=kernel_size) / sigma).pow(2))
    line = (pdf / pdf.sum()).to(image.device, image.dtype)
    kernel = torch.mm(line[:, None], line[None, :]).expand(image.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(image, [pad] * 4, mode="reflect"), kernel, groups=image.shape[-3])


def _grid(total: int, height: int, width: int) -> int:
    """Rows of the token grid: the divisor of ``total`` nearest the latent's aspect ratio."""
    rows = round(math.sqrt(height / width * total))
    for i in range(math.floor(math.sqrt(total) / 2)):
        for candidate in (rows + i, max(1, rows - i)):
            if total % candidate == 0:
                return candidate
    return rows if rows > 0 and total % rows == 0 else 1


def blurred_where_attended(x0: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x0`` blurred where the recorded attention ``weights`` ([B * heads, hw, hw]) exceed the threshold."""
    batch, _, height, width = x0.shape
    mask = weights.reshape(batch, -1, *weights.shape[1:]).mean(1).sum(1) > THRESHOLD
    total = mask.shape[-1]
    rows = _grid(total, height, width)
    mask = mask.reshape(batch, rows, total // rows).unsqueeze(1).to(x0.dtype)
    mask = F.interpolate(mask, (height, width))
    return gaussian_blur(x0, BLUR_KERNEL, sigma) * mask + x0 * (1 - mask)


def self_attention_guidance(scale: float, blur_sigma: float) -> tuple[Callable[..., torch.Tensor],
                                                                     Callable[[Mapping[str, Any]], torch.Tensor]]:
    """``(middle block attn1 replacement that records the negative pass's weights, post-CFG hook)``."""
    recorded: list[torch.Tensor] = []

    def record(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: Mapping[str, Any]) -> torch.Tensor:
        sides = list(extra["cond_or_uncond"])
        heads = extra["n_heads"]
        if 1 in sides:
            per_side = q.shape[0] // len(sides)
            index = sides.index(1)
            part = slice(per_side * index, per_side * (index + 1))
            recorded[:] = [attention_weights(q[part], k[part], heads)]
        return attention(q, k, v, heads)

    def post_cfg(args: Mapping[str, Any]) -> torch.Tensor:
        result = args["denoised"]
        if scale == 0 or not recorded or args["uncond"] is None or min(result.shape[2:]) <= 4:
            return result  # nothing to guide with, or too small for the blur's reflected border
        uncond_pred, x = args["uncond_denoised"], args["input"]
        degraded = blurred_where_attended(uncond_pred, recorded[0].to(uncond_pred.dtype), blur_sigma)
        options = with_replacement(args["model_options"], "attn1", ("middle", 0, 0), attention_only)
        sag = side_prediction(args, "uncond", degraded + x - uncond_pred, options)
        return result + (degraded - sag) * scale

    return record, post_cfg


def attention_only(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: Mapping[str, Any]) -> torch.Tensor:
    """Plain attention (the extra pass records nothing)."""
    return attention(q, k, v, extra["n_heads"])
