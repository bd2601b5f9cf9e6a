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


def test_bf16_convolution_models_are_channels_last_on_the_cpu(tiny_sd15_path: Path) -> None:
    fp32 = load_checkpoint(tiny_sd15_path, precision="fp32")
    bf16 = load_checkpoint(tiny_sd15_path, precision="bf16")
    for loaded, channels_last in ((fp32, False), (bf16, True)):
        for model in (loaded.unet.model, loaded.vae.model):
            convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[2:] != (1, 1)]
            assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last
                                 and p.is_contiguous() != channels_last for p in convs)
    # the channels-last bf16 VAE decodes what the fp32 one does, bf16 rounding apart
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded = bf16.vae.model.decode(latent.bfloat16()).sample.float()
        reference = fp32.vae.model.decode(latent).sample
    assert decoded.shape == reference.shape and (decoded - reference).abs().max() < 0.1
