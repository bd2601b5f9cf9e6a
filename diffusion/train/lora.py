"""Training a LoRA on a MODEL: low-rank factors on the UNet's attention layers, the base left frozen.

What ComfyUI's TrainLoraNode does, on our runtime: each step draws a batch of latents and a
timestep, noises the latents, denoises them through the model (``diffusion.denoiser``, so
SDXL's extra conditioning and inpainting channels work as when sampling) with the LoRA's
output added by forward hooks, and fits the denoised latents to the clean ones. The base
weights (with the MODEL's own patches applied) never change; the result is a
:class:`TrainedLora`, which becomes weight patches (``diffusion.lora.kohya.LoraAdapter``) or a kohya file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from diffusion.convert import unet_ldm_names
from diffusion.denoiser import Denoiser
from diffusion.lora.kohya import LoraAdapter
from diffusion.models import UNetModel
from diffusion.sampling.schedule import process_latent_in

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD, "RMSprop": torch.optim.RMSprop,
}
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "MSE": F.mse_loss, "L1": F.l1_loss, "Huber": F.huber_loss, "SmoothL1": F.smooth_l1_loss,
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: Training algorithms this module implements (ComfyUI also lists LoHa, LoKr and OFT).
ALGORITHMS = ("LoRA",)


@dataclass
class TrainedLora:
    """A trained LoRA (ComfyUI's LORA_MODEL): ``{UNet weight name: (down [r, in], up [out, r])}`` and its alpha."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    alpha: float
    rank: int
    unet_config: Mapping[str, Any]
    steps: int = 0

    def adapters(self) -> dict[str, LoraAdapter]:
        """The weight adapters (the loader's own LoRA adapter), keyed by the UNet's parameter names."""
        return {key: LoraAdapter(up.detach(), down.detach(), self.alpha) for key, (down, up) in self.factors.items()}

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """The kohya layout: ``lora_unet_<LDM name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``."""
        names = unet_ldm_names(self.factors, self.unet_config)
        out: dict[str, torch.Tensor] = {}
        for key, (down, up) in self.factors.items():
            stem = _kohya_stem(names[key])
            out[f"{stem}.lora_down.weight"] = down.detach().contiguous()
            out[f"{stem}.lora_up.weight"] = up.detach().contiguous()
            out[f"{stem}.alpha"] = torch.tensor(self.alpha, dtype=down.dtype)
        return out


@dataclass
class TrainingRun:
    """What :func:`train_lora` returns: the LoRA and the loss of every optimiser step."""

    lora: TrainedLora
    losses: list[float] = field(default_factory=list)


def target_layers(module: nn.Module) -> dict[str, nn.Linear]:
    """The layers a LoRA trains: every linear layer inside the UNet's transformer (attention) blocks."""
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear) and ".attentions." in name}


def _init_factors(layers: Mapping[str, nn.Linear], rank: int, dtype: torch.dtype, generator: torch.Generator,
                  existing: TrainedLora | None) -> dict[str, tuple[nn.Parameter, nn.Parameter]]:
    factors = {}
    for name, layer in layers.items():
        key = name + ".weight"
        if existing is not None and key in existing.factors:
            down0, up0 = existing.factors[key]
            down, up = down0.detach().to(dtype).clone(), up0.detach().to(dtype).clone()
        else:
            bound = 1.0 / math.sqrt(layer.in_features)  # kaiming-uniform with a = sqrt(5), as LoRA initialises
            down = (torch.rand(rank, layer.in_features, generator=generator) * 2 - 1).mul_(bound).to(dtype)
            up = torch.zeros(layer.out_features, rank, dtype=dtype)
        factors[key] = (nn.Parameter(down.to(layer.weight.device)), nn.Parameter(up.to(layer.weight.device)))
    return factors


@contextmanager
def _lora_hooks(layers: Mapping[str, nn.Linear], factors: Mapping[str, tuple[nn.Parameter, nn.Parameter]],
                scale: float) -> Iterator[None]:
    """Add ``scale * x @ down.T @ up.T`` to each layer's output while the block runs."""
    def hook_for(down: nn.Parameter, up: nn.Parameter) -> Callable[..., torch.Tensor]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            x = args[0].to(down.dtype)
            return out + (F.linear(F.linear(x, down), up) * scale).to(out.dtype)
        return hook

    handles = [layers[key.removesuffix(".weight")].register_forward_hook(hook_for(*pair))
               for key, pair in factors.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def train_lora(
    model: UNetModel,
    latents: torch.Tensor,
    positive: Sequence[Sequence[Any]],
    *,
    steps: int = 16,
    batch_size: int = 1,
    grad_accumulation_steps: int = 1,
    learning_rate: float = 5e-4,
    rank: int = 8,
    optimizer: str = "AdamW",
    loss_function: str = "MSE",
    seed: int = 0,
    training_dtype: str = "fp32",
    lora_dtype: str = "fp32",
    algorithm: str = "LoRA",
    gradient_checkpointing: bool = False,
    existing: TrainedLora | None = None,
    callback: Callable[[int, int, float], None] | None = None,
) -> TrainingRun:
    """Train a LoRA on ``latents`` (unscaled, [N, C, H, W]) with ``positive`` (one entry, or one per latent).

    Same arguments and seed, same factors (on one thread). ``callback(step, steps, loss)``
    after each optimiser step; an exception it raises stops training.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"training algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}")
    if optimizer not in OPTIMIZERS or loss_function not in LOSSES or training_dtype not in DTYPES:
        raise ValueError(f"unknown optimizer, loss or dtype: {optimizer!r}, {loss_function!r}, {training_dtype!r}")
    count = latents.shape[0]
    if len(positive) not in (1, count):
        raise ValueError(f"{len(positive)} conditionings for {count} latents: give one, or one per latent")
    generator = torch.Generator().manual_seed(seed)
    layers = target_layers(model.model)
    if existing is not None:
        rank = existing.rank
    factors = _init_factors(layers, rank, DTYPES[lora_dtype], generator, existing)
    alpha = float(existing.alpha if existing is not None else rank)
    params = [p for pair in factors.values() for p in pair]
    opt = OPTIMIZERS[optimizer](params, lr=learning_rate)
    loss_fn = LOSSES[loss_function]
    scaled = process_latent_in(latents.float(), model.latent_scale).to(model.device)
    run = TrainingRun(TrainedLora({}, alpha, rank, model.model.config))
    autocast = torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=training_dtype == "bf16")
    with ExitStack() as stack:
        stack.enter_context(_frozen(model.model))
        stack.enter_context(_lora_hooks(layers, factors, alpha / rank))
        if gradient_checkpointing and hasattr(model.model, "enable_gradient_checkpointing"):
            model.model.enable_gradient_checkpointing()
            stack.callback(model.model.disable_gradient_checkpointing)
        for step in range(steps):
            total = 0.0
            for _ in range(grad_accumulation_steps):
                index = torch.randint(count, (batch_size,), generator=generator)
                x0 = scaled[index]
                t = torch.randint(0, 1000, (1,), generator=generator)
                sigma = model.schedule.sigma(t.float()).to(model.device).expand(batch_size)
                noise = torch.randn(x0.shape, generator=generator).to(model.device)
                x = x0 + noise * sigma.view(-1, 1, 1, 1)
                conds = [positive[0]] if len(positive) == 1 else [positive[int(i)] for i in index]
                denoised = _denoise(model, conds, x, sigma, autocast)
                loss = loss_fn(denoised.float(), x0) / grad_accumulation_steps
                loss.backward()
                total += float(loss.detach())
            opt.step()
            opt.zero_grad(set_to_none=True)
            run.losses.append(total)
            if callback is not None:
                callback(step, steps, total)
    run.lora = TrainedLora({k: (d.detach(), u.detach()) for k, (d, u) in factors.items()}, alpha, rank,
                           model.model.config, steps)
    return run


def _denoise(model: UNetModel, conds: Sequence[Sequence[Any]], x: torch.Tensor, sigma: torch.Tensor,
             autocast: torch.autocast) -> torch.Tensor:
    """The denoised batch, each item with its own conditioning (items sharing one are denoised together)."""
    groups: dict[int, list[int]] = {}
    for i, cond in enumerate(conds):
        groups.setdefault(id(cond), []).append(i)
    out = torch.empty_like(x)
    for rows in groups.values():
        part = x[rows]
        denoiser = Denoiser(model, [conds[rows[0]]], [], 1.0, tuple(part.shape))
        denoiser.grad = True
        with autocast:
            result = denoiser(part, sigma[rows])
        out = out.index_put((torch.tensor(rows),), result.float())
    return out


def _kohya_stem(ldm_key: str) -> str:
    return "lora_unet_" + ldm_key.removesuffix(".weight").replace(".", "_")


def write_trained_lora(path: str | os.PathLike[str], lora: TrainedLora) -> Path:
    """Write a trained LoRA as a kohya ``.safetensors`` file, atomically."""
    from diffusion.save import write_tensors

    return write_tensors(path, lora.file_tensors(), {"ss_network_dim": str(lora.rank),
                                                     "ss_network_alpha": str(lora.alpha)})


def read_trained_lora(path: str | os.PathLike[str], model: UNetModel) -> TrainedLora:
    """Read a kohya LoRA file (as :func:`write_trained_lora` writes it) for ``model``, to train it further."""
    from safetensors import safe_open

    keys = [k for k, _ in model.model.named_parameters()]
    by_stem = {_kohya_stem(ldm): key for key, ldm in unet_ldm_names(keys, model.model.config).items()}
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    alpha = rank = None
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        for name in sorted(names):
            if not name.endswith(".lora_down.weight"):
                continue
            stem = name.removesuffix(".lora_down.weight")
            if stem not in by_stem:
                raise ValueError(f"{Path(path).name}: {stem} matches no weight of this model")
            down, up = f.get_tensor(name), f.get_tensor(stem + ".lora_up.weight")
            factors[by_stem[stem]] = (down, up)
            rank = down.shape[0]
            if stem + ".alpha" in names:
                alpha = float(f.get_tensor(stem + ".alpha"))
    if not factors or rank is None:
        raise ValueError(f"{Path(path).name}: not a LoRA (no lora_down weights)")
    return TrainedLora(factors, alpha if alpha is not None else float(rank), rank, model.model.config)
