"""Neighbourhood filters behind the image nodes: grey morphology and Canny edges, in plain torch.

Both follow kornia 0.9's definitions (ComfyUI's Morphology and Canny nodes call kornia,
unpinned) so the results match without it: a flat square structuring element whose
origin is ``size // 2`` and whose pixels outside the image never win, and Canny's grey,
separable blur, Sobel, non-maximum suppression with its tie rule, double threshold and
hysteresis. Checked against kornia 0.9.0 on random images: identical edge maps and
morphology. Tensors are channels-first ``[B, C, H, W]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MORPHOLOGY_OPERATIONS = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")


def _window_extreme(x: torch.Tensor, size: int, largest: bool) -> torch.Tensor:
    """Max (or min) over a ``size`` x ``size`` window with origin ``size // 2``; outside pixels never count.

    Dilation reflects the structuring element (Minkowski), which matters for an even size:
    its window then reaches one pixel further after the pixel than before it.
    """
    before, after = size // 2, size - size // 2 - 1
    if largest:
        before, after = after, before
    fill = -math.inf if largest else math.inf
    padded = F.pad(x, (before, after, before, after), value=fill)
    if largest:
        return F.max_pool2d(padded, size, stride=1)
    return -F.max_pool2d(-padded, size, stride=1)


def dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    """Grey dilation with a flat ``size`` x ``size`` square."""
    return _window_extreme(x, size, largest=True)


def erode(x: torch.Tensor, size: int) -> torch.Tensor:
    """Grey erosion with a flat ``size`` x ``size`` square."""
    return _window_extreme(x, size, largest=False)


def morphology(x: torch.Tensor, operation: str, size: int) -> torch.Tensor:
    """One of :data:`MORPHOLOGY_OPERATIONS` with a ``size`` x ``size`` square."""
    if operation == "erode":
        return erode(x, size)
    if operation == "dilate":
        return dilate(x, size)
    if operation == "open":
        return dilate(erode(x, size), size)
    if operation == "close":
        return erode(dilate(x, size), size)
    if operation == "gradient":
        return dilate(x, size) - erode(x, size)
    if operation == "top_hat":
        return x - dilate(erode(x, size), size)
    if operation == "bottom_hat":
        return erode(dilate(x, size), size) - x
    raise ValueError(f"unknown morphology operation {operation!r}; expected one of {', '.join(MORPHOLOGY_OPERATIONS)}")


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _blur5(x: torch.Tensor) -> torch.Tensor:
    """5x5 Gaussian, sigma 1, reflect borders (kornia's gaussian_blur2d inside canny): rows, then columns."""
    g = _gaussian_1d(5, 1.0).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), g.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="reflect"), g.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised Sobel x and y gradients (a unit step gives 4), replicate borders."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype)
    kernel = torch.stack((kx, kx.t()))[:, None]
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return grads[:, 0:1], grads[:, 1:2]


# Neighbour offsets (dy, dx) of the eight gradient directions, 45 degrees apart, image y downwards.
_DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))


def _shifted(x: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """``out[i, j] = x[i + dy, j + dx]``, ``fill`` past the edges."""
    padded = F.pad(x, (1, 1, 1, 1), value=fill)
    h, w = x.shape[-2:]
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def canny(image: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Canny edges of ``[B, C, H, W]`` (RGB is turned grey first): ``[B, 1, H, W]`` of 0.0 and 1.0.

    The thresholds are in units of the unnormalised Sobel magnitude of the blurred grey
    image (a unit step reaches about 2.6). Non-maximum suppression keeps a pixel above
    both neighbours along its gradient (rounded to 45 degrees); a tie with the right or
    lower neighbour keeps the pixel, so a step between two pixels gives a one-pixel line.
    Outside the image the magnitude is that of a flat pixel.
    """
    if image.shape[1] == 3:
        r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
        image = 0.299 * r + 0.587 * g + 0.114 * b
    elif image.shape[1] != 1:
        raise ValueError(f"Canny needs a 1- or 3-channel image, got {image.shape[1]} channels")
    if min(image.shape[-2:]) < 3:
        raise ValueError("Canny needs an image of at least 3x3 pixels")
    if not 0 < low_threshold <= high_threshold:
        raise ValueError(f"Canny needs 0 < low_threshold <= high_threshold, got {low_threshold} and {high_threshold}")
    blurred = _blur5(image.float())
    gx, gy = _sobel(blurred)
    eps = 1e-6
    magnitude = torch.sqrt(gx * gx + gy * gy + eps)
    flat = math.sqrt(eps)
    sector = torch.round(torch.atan2(gy, gx) * (4.0 / math.pi)).long() % 8
    neighbours = torch.cat([_shifted(magnitude, dy, dx, flat) for dy, dx in _DIRECTIONS], dim=1)

    # Magnitudes within 1e-5 of each other (relative) tie: mirror-image pixels differ only in the last bits, by
    # the order the CPU's convolution kernels add in (AVX2 and AVX-512 differ), and the tie rule must decide them.
    tolerance = magnitude * 1e-5

    def beats(direction: torch.Tensor) -> torch.Tensor:
        other = neighbours.gather(1, direction)
        tie_wins = (direction == 0) | (direction == 2)
        return (magnitude > other + tolerance) | (tie_wins & ((magnitude - other).abs() <= tolerance))

    keep = beats(sector) & beats((sector + 4) % 8) & (magnitude > flat)
    magnitude = magnitude * keep
    edges = (magnitude > low_threshold).float() * 0.5 + (magnitude > high_threshold).float() * 0.5
    # Hysteresis: a weak edge survives when it touches a strong one, repeated until nothing changes.
    weak = edges == 0.5
    strong = edges == 1.0
    while True:
        near_strong = torch.zeros_like(strong)
        for dy, dx in _DIRECTIONS:
            near_strong |= _shifted(strong.float(), dy, dx) > 0
        grown = strong | (weak & near_strong)
        if torch.equal(grown, strong):
            break
        strong = grown
    return strong.to(image.dtype)
