"""How a UNet call is computed: another precision (ModelComputeDtype), or through torch.compile (TorchCompileModel)."""

from __future__ import annotations

import logging
import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def compute_precision(name: str | None, weight_dtype: torch.dtype, device: torch.device) -> AbstractContextManager[Any]:
    """Autocast to ``name`` (fp16, bf16) for the call; fp32 or None over fp32 weights change nothing.

    Computing in fp32 over half-precision weights would need a cast copy of the UNet, which
    a call-time option must not make: that is a one-line error (load the model in fp32).
    """
    if name is None or DTYPES[name] == weight_dtype:
        return nullcontext()
    if name == "fp32":
        raise ValueError("ModelComputeDtype fp32: the model's weights are held in lower precision; "
                         "load it with --precision fp32")
    return torch.autocast(device.type, dtype=DTYPES[name])


def compiled(module: nn.Module, backend: str | None) -> Any:
    """``module`` compiled with ``backend`` (made once per module and backend), or ``module`` itself.

    A backend that cannot compile here is logged once and the module runs eagerly.
    """
    if backend is None:
        return module
    cache = _COMPILED.setdefault(module, {})
    if backend not in cache:
        try:
            cache[backend] = torch.compile(module, backend=backend, dynamic=False)
        except Exception as exc:  # an unavailable backend: the model still runs, as ComfyUI's node falls back
            log.warning("TorchCompileModel: cannot compile with %s (%s); running uncompiled", backend, exc)
            cache[backend] = module
    return cache[backend]
