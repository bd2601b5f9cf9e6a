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


#: ``--compile`` choices: never, always (inductor), or only where it wins (``auto``).
COMPILE_MODES = ("off", "on", "auto")
#: The environment variable naming inductor's on-disk cache (read by torch at compile time).
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_choice(mode: str, device: torch.device | str) -> tuple[bool, str]:
    """(whether the UNet and VAE decoder are compiled, why) for ``--compile mode`` on ``device``.

    ``auto`` compiles on CUDA only: on CPU, inductor's first compile of a UNet costs about a
    minute per shape, more than it saves in a typical run (FINDINGS), and MPS lacks inductor.
    Raises ``ValueError`` for an unknown mode.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    kind = torch.device(device).type
    if mode == "off":
        return False, "--compile off"
    if not hasattr(torch, "compile"):
        return False, "this torch has no torch.compile"
    if mode == "on":
        return True, "--compile on"
    if kind == "cuda":
        return True, "auto: compiled kernels win on CUDA"
    return False, f"auto: on {kind} the one-off compile costs more than it saves"


def use_compile_cache(directory: str | None) -> str:
    """Keep inductor's compiled artefacts in ``directory`` (kept if the user set ``TORCHINDUCTOR_CACHE_DIR``).

    With the FX graph cache on, a fresh process compiling the same model and shape reads the
    kernels from there instead of generating and building them again. Returns the directory used.
    """
    import os

    try:
        import torch._inductor.config as inductor_config
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # pragma: no cover - a torch without inductor compiles nothing anyway
        return os.environ.get(CACHE_ENV, "")
    inductor_config.fx_graph_cache = True
    # torch writes its default (a folder under /tmp, lost at reboot) into the variable itself the
    # first time it looks: that value is not the user's choice and is replaced
    current = os.environ.get(CACHE_ENV)
    if directory and (not current or os.path.abspath(current) == os.path.abspath(default_cache_dir())):
        os.makedirs(directory, exist_ok=True)
        os.environ[CACHE_ENV] = directory
    return os.environ.get(CACHE_ENV, "")
