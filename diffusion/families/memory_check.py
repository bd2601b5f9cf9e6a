"""Will it fit? The memory a transformer-family load needs, checked before any weight is materialised.

A full-size Flux is 12 B parameters (24 GB in bf16, 48 GB in fp32); being killed by the OS
half-way through is the worst way to learn that it does not fit. Before a load the loader
adds up, from the safetensors header alone (names, shapes, dtypes: no tensor read), the
bytes every tensor it will build takes at the dtype it will be stored in, and compares that
with the memory available: the OS's ``available`` figure (psutil) plus what the caller says
it can free (the model cache's other models). Too little is a :class:`NotEnoughMemory`
naming both figures.

The estimate is an upper bound for tensors kept at the file's own dtype (those stay views of
the file's memory map, page cache the OS can drop), and exact for cast ones.

``NOODLEBOX_AVAILABLE_MEMORY`` (bytes, or with a ``K``/``M``/``G`` suffix) replaces the
measured figure, for tests and for users who want a hard cap below what the OS reports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import psutil
import torch

from diffusion.checkpoint import _SAFETENSORS_DTYPES, CheckpointError

ENV = "NOODLEBOX_AVAILABLE_MEMORY"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class NotEnoughMemory(CheckpointError):
    """The load would not fit in memory; the message names the bytes needed and available."""


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912; a bare number is bytes. Raises ``ValueError`` for anything else."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
    number = text[: len(text) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{ENV}={text!r} is not a size (bytes, or a number with K, M or G)") from None
    if value < 0:
        raise ValueError(f"{ENV}={text!r} is negative")
    return int(value * _UNITS[unit])


def available_bytes() -> int:
    """Memory a load may use now: ``NOODLEBOX_AVAILABLE_MEMORY`` if set, else the OS's available figure."""
    override = os.environ.get(ENV, "").strip()
    if override:
        return parse_size(override)
    return int(psutil.virtual_memory().available)


def human(n: int) -> str:
    """Bytes as a short figure in binary units (``1.5 GiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - the loop always returns


def tensor_bytes(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str], keys: Iterable[str],
                 dtype: torch.dtype | None) -> int:
    """Bytes the tensors ``keys`` take once floating-point ones are cast to ``dtype`` (None: as stored)."""
    total = 0
    for key in keys:
        stored = _SAFETENSORS_DTYPES.get(dtypes.get(key, "F32"), torch.float32)
        target = dtype if dtype is not None and stored.is_floating_point else stored
        count = 1
        for n in shapes[key]:
            count *= n
        total += count * target.itemsize
    return total


def require(needed: int, name: str, what: str, *, freeable: int = 0, available: int | None = None) -> None:
    """Raise :class:`NotEnoughMemory` (one line) when ``needed`` bytes exceed what is available plus ``freeable``."""
    free = available_bytes() if available is None else available
    if needed <= free + freeable:
        return
    cached = f" + {human(freeable)} the model cache can free" if freeable else ""
    hint = "load it with an fp8 weight_dtype or free memory first" if what == "diffusion model" else \
        "free memory first"
    raise NotEnoughMemory(f"{name}: loading the {what} needs {human(needed)} of memory, only {human(free)} is "
                          f"available{cached}; {hint}")
