"""Precision: auto picks fp16 on CUDA, bf16 on CPUs with native bf16, fp32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.precision import cpu_has_native_bf16, resolve_precision
from diffusion.synthetic import write_checkpoint

AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def test_cpu_flags_decide_native_bf16() -> None:
    assert cpu_has_native_bf16(AMX_CPU)
    assert cpu_has_native_bf16("flags : avx512_bf16\n")
    assert not cpu_has_native_bf16(OLD_CPU)
    assert not cpu_has_native_bf16("")


@pytest.mark.parametrize(
    ("precision", "device", "cpuinfo", "unet", "vae"),
    [
        ("auto", "cuda", OLD_CPU, torch.float16, torch.float32),  # SD VAEs overflow in fp16
        ("auto", "cpu", AMX_CPU, torch.bfloat16, torch.bfloat16),
        ("auto", "cpu", OLD_CPU, torch.float32, torch.float32),
        ("auto", "mps", AMX_CPU, torch.float32, torch.float32),
        ("fp32", "cuda", OLD_CPU, torch.float32, torch.float32),
        ("bf16", "cpu", OLD_CPU, torch.bfloat16, torch.bfloat16),
    ],
)
def test_resolve_precision(precision: str, device: str, cpuinfo: str, unet: torch.dtype, vae: torch.dtype) -> None:
    resolved = resolve_precision(precision, device, cpuinfo)
    assert (resolved.unet, resolved.text, resolved.vae) == (unet, unet, vae)


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int4", "cpu")


def test_weights_are_cast_while_loading(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "s.safetensors", "sd2", "tiny", 0, torch.float32)
    fp32 = load_checkpoint(path, precision="fp32")
    bf16 = load_checkpoint(path, precision="bf16")
    for module in bf16.modules():
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    a = fp32.unet.model.state_dict()
    b = bf16.unet.model.state_dict()
    assert all(torch.equal(a[k].to(torch.bfloat16), b[k]) for k in a)
    assert bf16.unet.dtype == torch.bfloat16 and bf16.vae.dtype == torch.bfloat16
