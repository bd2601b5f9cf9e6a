"""Which floating-point precision the models run in.

``auto`` picks what is fast and safe on the device at hand: fp16 on CUDA, bf16 on CPUs
that compute bf16 natively (Intel AMX or AVX512-BF16; elsewhere bf16 is emulated and
slower than fp32), fp32 everywhere else. ``fp32`` is the exact mode: no rounding of the
stored weights beyond what the file holds.

SD1/SDXL VAEs overflow in fp16 (NaNs in the decoder's mid block), so a model running in
fp16 keeps its VAE in fp32, as ComfyUI does on GPUs without bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

#: Accepted precision names (CLI flags, node options).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

_BY_NAME = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """The dtype of each model part once loaded."""

    unet: torch.dtype
    text: torch.dtype
    vae: torch.dtype

    @property
    def name(self) -> str:
        """The UNet's dtype as a short name (``fp32``, ``fp16``, ``bf16``)."""
        return dtype_name(self.unet)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``fp16`` (other dtypes: torch's own name without the prefix)."""
    for name, value in _BY_NAME.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True if the CPU flags include ``amx_bf16`` or ``avx512_bf16``.

    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when not given; False where that
    file does not exist, e.g. macOS).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


def resolve_precision(precision: str, device: torch.device | str, cpuinfo: str | None = None) -> Precision:
    """Turn a precision name (``auto``/``fp32``/``fp16``/``bf16``) into per-part dtypes for ``device``.

    Raises ``ValueError`` for an unknown name.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "auto":
        if kind == "cuda":
            precision = "fp16"
        elif kind == "cpu" and cpu_has_native_bf16(cpuinfo):
            precision = "bf16"
        else:
            precision = "fp32"
    dtype = _BY_NAME[precision]
    vae = torch.float32 if dtype == torch.float16 else dtype
    return Precision(unet=dtype, text=dtype, vae=vae)


def prefers_channels_last(dtype: torch.dtype, device: torch.device | str) -> bool:
    """True where the convolution models (UNet, VAE) should keep their 4-D weights channels-last.

    bf16 on a CPU: oneDNN's bf16 convolutions run on NHWC without reordering every input and
    weight (full-size SD1.5 on a 2-core AMX Xeon: VAE decode of a 32x32 latent 1.2 -> 0.48 s, a
    UNet call at batch 2 about 0.75x). fp32 stays in torch's default layout, bit for bit what
    other engines compute (channels-last gained only 10% there), and so do CUDA and MPS.
    """
    return dtype == torch.bfloat16 and torch.device(device).type == "cpu"


def place_model(model: torch.nn.Module, dtype: torch.dtype, device: torch.device | str) -> torch.nn.Module:
    """``model`` moved to ``device``, channels-last where :func:`prefers_channels_last` says so."""
    model = model.to(device)
    if prefers_channels_last(dtype, device):
        model = model.to(memory_format=torch.channels_last)
    return model


def precision_reason(precision: str, device: torch.device | str, cpuinfo: str | None = None) -> str:
    """Why :func:`resolve_precision` picks what it picks for ``precision`` on ``device`` (one line)."""
    if precision != "auto":
        return f"--precision {precision}"
    kind = torch.device(device).type
    if kind == "cuda":
        return "auto: fp16 on CUDA (the VAE in fp32)"
    if kind == "cpu" and cpu_has_native_bf16(cpuinfo):
        return "auto: bf16, the CPU has bf16 units (amx_bf16 or avx512_bf16)"
    if kind == "cpu":
        return "auto: fp32, the CPU has no bf16 units (no amx_bf16 or avx512_bf16 flag)"
    return f"auto: fp32 on {kind}"
