"""TrainLoraNode's algorithms (LoRA, LoHa, LoKr, OFT): start as no change, train, and load back as the same patches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.checkpoint import load_checkpoint
from diffusion.lora.load import lora_patches, read_lora
from diffusion.models import LoadedCheckpoint
from diffusion.train.lora import (
    ALGORITHMS,
    _delta,
    _init_parts,
    _lora_hooks,
    factorization,
    read_trained_lora,
    target_layers,
    train_lora,
    write_trained_lora,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_sd15_path: Path) -> LoadedCheckpoint:
    return load_checkpoint(tiny_sd15_path, precision="fp32")


def _inputs(ckpt: LoadedCheckpoint) -> tuple[torch.Tensor, list]:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g)
    positive = [[torch.randn(1, 77, ckpt.unet.context_dim, generator=g), {}]]
    return latents, positive


def test_factorization_is_lycoris_rule() -> None:
    assert factorization(320, 8) == (8, 40) and factorization(64, 16) == (4, 16) and factorization(32, 64) == (4, 8)
    assert factorization(12, 5) == (3, 4) and factorization(320, 3) == (2, 160) and factorization(14, -1) == (2, 7)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_starts_as_no_change(ckpt: LoadedCheckpoint, algorithm: str) -> None:
    layer = next(iter(target_layers(ckpt.unet.model).values()))
    parts = _init_parts(algorithm, layer, 4, torch.Generator().manual_seed(0))
    if algorithm == "LoRA":
        assert torch.count_nonzero(parts["up"]) == 0
    else:
        assert torch.count_nonzero(_delta(algorithm, parts, 4.0, layer.weight.detach())) == 0


@pytest.mark.parametrize("algorithm", ["LoHa", "LoKr", "OFT"])
def test_trained_adapter_is_the_same_as_hooks_patches_and_file(ckpt: LoadedCheckpoint, tmp_path: Path,
                                                                algorithm: str) -> None:
    latents, positive = _inputs(ckpt)
    run = train_lora(ckpt.unet, latents, positive, steps=3, batch_size=2, learning_rate=0.05, rank=4,
                     algorithm=algorithm, seed=1)
    lora = run.lora
    assert lora.algorithm == algorithm and len(run.losses) == 3 and lora.factors
    key, parts = next(iter(lora.factors.items()))
    module = ckpt.unet.model
    with ckpt.unet.use() as base:
        weight = dict(base.named_parameters())[key].detach().clone()
    change = _delta(algorithm, parts, lora.alpha, weight)
    assert change.abs().max() > 0  # training moved it

    # The hooks training ran with give what the loader's patches give.
    layers = target_layers(module)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([500.0])
    context = positive[0][0]
    with torch.no_grad():
        with ckpt.unet.use() as base, _lora_hooks(layers, lora.factors, algorithm, lora.alpha):
            hooked = base(x, t, encoder_hidden_states=context).sample
        with ckpt.unet.with_patches(lora.adapters()).use() as patched:
            expected = patched(x, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(hooked, expected, rtol=1e-4, atol=1e-5)

    # Saved in the LyCORIS layout, the LoRA loader reads it as the same change; and it trains on from the file.
    path = write_trained_lora(tmp_path / f"{algorithm}.safetensors", lora)
    read = read_lora(path)
    assert not read.unparsed
    placed = lora_patches(read, ckpt.unet, None)
    with ckpt.unet.with_patches(placed.unet).use() as patched:
        from_file = dict(patched.named_parameters())[key].detach().clone()
    torch.testing.assert_close(from_file, weight + change, rtol=1e-5, atol=1e-6)
    again = read_trained_lora(path, ckpt.unet)
    assert again.algorithm == algorithm and again.factors.keys() == lora.factors.keys()
    assert all(torch.equal(again.factors[key][p], t) for p, t in parts.items())
    with pytest.raises(ValueError, match=f"the existing LoRA is a {algorithm}; train it as {algorithm}, not LoRA"):
        train_lora(ckpt.unet, latents, positive, steps=1, algorithm="LoRA", existing=again)
