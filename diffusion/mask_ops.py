"""Mask operations behind the mask nodes: growing, feathering, combining, and Porter-Duff compositing.

MASK is ``[B, H, W]`` float in 0..1; a mask that is 1 marks the area a node acts on, and
in the alpha nodes a mask is ``1 - alpha`` (as LoadImage gives it). The formulas are
ComfyUI's, including its quirks, so shared workflows give the same masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffusion.resize import upscale

MASK_OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")
PORTER_DUFF_MODES = ("ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN",
                     "MULTIPLY", "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR")


def as_batch(mask: torch.Tensor) -> torch.Tensor:
    """Any ``[..., H, W]`` mask as ``[B, H, W]``."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a mask to ``height`` x ``width`` (``[B, H, W]``)."""
    return F.interpolate(as_batch(mask)[:, None], size=(height, width), mode="bilinear").squeeze(1)


def grow(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """Dilate (``expand`` > 0) or erode (< 0) ``|expand|`` times with a 3x3 footprint.

    With ``tapered_corners`` the footprint is a cross (the grown area gets cut corners),
    else the full square. Edge pixels count as their own outside neighbours.
    """
    out = as_batch(mask).float()[:, None]
    if tapered_corners:
        footprint = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    else:
        footprint = torch.ones((3, 3), dtype=torch.bool)
    offsets = [(dy - 1, dx - 1) for dy in range(3) for dx in range(3) if footprint[dy, dx]]
    height, width = out.shape[-2:]
    for _ in range(abs(expand)):
        padded = F.pad(out, (1, 1, 1, 1), mode="replicate")
        views = torch.stack([padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in offsets])
        out = views.amax(dim=0) if expand > 0 else views.amin(dim=0)
    return out[:, 0]


def feather(mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> torch.Tensor:
    """FeatherMask: fade the mask linearly toward each side over that many pixels.

    Column ``i`` from the left is scaled by ``(i + 1) / left`` (and rows likewise from the
    top). The right and bottom fades index from the end as ComfyUI does, so their first
    step lands on column (row) 0 and the outermost one is scaled by ``2 / right``.
    """
    out = as_batch(mask).clone()
    height, width = out.shape[-2:]
    left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
    for i in range(left):
        out[:, :, i] *= (i + 1.0) / left
    for i in range(right):
        out[:, :, -i] *= (i + 1.0) / right
    for i in range(top):
        out[:, i, :] *= (i + 1.0) / top
    for i in range(bottom):
        out[:, -i, :] *= (i + 1.0) / bottom
    return out


def combine(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> torch.Tensor:
    """MaskComposite: apply ``operation`` between the source and the destination area at ``(x, y)``, clamped to 0..1.

    The part of the source past the destination's right and bottom edges is dropped; the
    logical operations round both masks to 0/1 first.
    """
    if operation not in MASK_OPERATIONS:
        raise ValueError(f"unknown mask operation {operation!r}; expected one of {', '.join(MASK_OPERATIONS)}")
    out = as_batch(destination).clone()
    source = as_batch(source).to(out.dtype)
    right, bottom = min(x + source.shape[-1], out.shape[-1]), min(y + source.shape[-2], out.shape[-2])
    if right <= x or bottom <= y:
        return out.clamp(0.0, 1.0)
    part = source[:, : bottom - y, : right - x]
    region = out[:, y:bottom, x:right]
    if part.shape[0] not in (1, region.shape[0]):
        raise ValueError(f"cannot combine a batch of {part.shape[0]} masks with a batch of {region.shape[0]}")
    if operation == "multiply":
        result = region * part
    elif operation == "add":
        result = region + part
    elif operation == "subtract":
        result = region - part
    else:
        a, b = region.round().bool(), part.round().bool()
        result = {"and": a & b, "or": a | b, "xor": a ^ b}[operation].to(out.dtype)
    out[:, y:bottom, x:right] = result
    return out.clamp(0.0, 1.0)


def color_to_mask(image: torch.Tensor, color: int) -> torch.Tensor:
    """1 where an image's 8-bit RGB equals ``color`` (0xRRGGBB), else 0."""
    rgb = (image[..., :3].clamp(0, 1) * 255.0).round().to(torch.int64)
    packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
    return (packed == color).float()


def _porter_duff(src: torch.Tensor, sa: torch.Tensor, dst: torch.Tensor, da: torch.Tensor,
                 mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite premultiplied ``src``/``dst`` with alphas ``sa``/``da``; returns premultiplied image and alpha."""
    union = sa + da - sa * da
    if mode == "ADD":
        return torch.clamp(src + dst, 0, 1), torch.clamp(sa + da, 0, 1)
    if mode == "CLEAR":
        return torch.zeros_like(dst), torch.zeros_like(da)
    if mode == "DARKEN":
        return (1 - da) * src + (1 - sa) * dst + torch.minimum(src, dst), union
    if mode == "LIGHTEN":
        return (1 - da) * src + (1 - sa) * dst + torch.maximum(src, dst), union
    if mode == "DST":
        return dst, da
    if mode == "DST_ATOP":
        return sa * dst + (1 - da) * src, sa
    if mode == "DST_IN":
        return dst * sa, sa * da
    if mode == "DST_OUT":
        return (1 - sa) * dst, (1 - sa) * da
    if mode == "DST_OVER":
        return dst + (1 - da) * src, da + (1 - da) * sa
    if mode == "MULTIPLY":
        return src * dst, sa * da
    if mode == "OVERLAY":
        return torch.where(2 * dst < da, 2 * src * dst, sa * da - 2 * (da - src) * (sa - dst)), union
    if mode == "SCREEN":
        return src + dst - src * dst, union
    if mode == "SRC":
        return src, sa
    if mode == "SRC_ATOP":
        return da * src + (1 - sa) * dst, da
    if mode == "SRC_IN":
        return src * da, sa * da
    if mode == "SRC_OUT":
        return (1 - da) * src, (1 - da) * sa
    if mode == "SRC_OVER":
        return src + (1 - sa) * dst, sa + (1 - sa) * da
    if mode == "XOR":
        return (1 - da) * src + (1 - sa) * dst, (1 - da) * sa + (1 - sa) * da
    raise ValueError(f"unknown Porter-Duff mode {mode!r}")


def porter_duff(source: torch.Tensor, source_mask: torch.Tensor, destination: torch.Tensor,
                destination_mask: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """PorterDuffImageComposite: IMAGEs ``[B, H, W, C]`` with masks ``1 - alpha``; returns ``(IMAGE, MASK)``.

    The batch is the shortest of the four inputs. The destination mask, the source and its
    mask are resized (bicubic, centre crop) to the destination image when they differ.
    """
    if mode not in PORTER_DUFF_MODES:
        raise ValueError(f"unknown Porter-Duff mode {mode!r}; expected one of {', '.join(PORTER_DUFF_MODES)}")
    source_mask, destination_mask = as_batch(source_mask), as_batch(destination_mask)
    if source.shape[-1] != destination.shape[-1]:
        raise ValueError(f"source and destination must have the same channels ({source.shape[-1]} vs "
                         f"{destination.shape[-1]})")
    count = min(len(source), len(source_mask), len(destination), len(destination_mask))
    height, width = destination.shape[1:3]

    def fit(t: torch.Tensor) -> torch.Tensor:  # [h, w, c] to the destination's size
        if t.shape[:2] == (height, width):
            return t
        return upscale(t.movedim(-1, 0)[None], width, height, "bicubic", "center")[0].movedim(0, -1)

    images, masks = [], []
    for i in range(count):
        dst, src = destination[i], fit(source[i])
        da = fit(destination_mask[i][..., None])
        sa = fit(source_mask[i][..., None])
        sa, da = 1 - sa, 1 - da  # masks to alphas
        image, alpha = _porter_duff(src * sa, sa, dst * da, da, mode)
        image = torch.where(alpha > 1e-5, image / alpha, torch.zeros_like(image))
        images.append(torch.clamp(image, 0, 1))
        masks.append(1 - alpha[..., 0])
    return torch.stack(images), torch.stack(masks)
