"""Training a LoRA (or a LoHa, LoKr or OFT) on a MODEL: adapters on the UNet's attention layers, the base frozen.

What ComfyUI's TrainLoraNode does, on our runtime: each step draws a batch of latents and a
timestep, noises the latents, denoises them through the model (``diffusion.denoiser``, so
SDXL's extra conditioning and inpainting channels work as when sampling) with the adapter's
output added by forward hooks, and fits the denoised latents to the clean ones. The base
weights (with the MODEL's own patches applied) never change; the result is a
:class:`TrainedLora`, which becomes weight patches (the LoRA loader's own adapters, made from
the same parts a file holds) or a kohya / LyCORIS file.

Each algorithm starts as no change: LoRA ``up`` zeros (``down`` kaiming-uniform), LoHa ``w2_a``
zeros (``w1_a`` normal 0.1, ``w1_b`` and ``w2_b`` normal 1, LyCORIS' initialisation), LoKr ``w2``
zeros (``w1`` kaiming-uniform; both whole, split by :func:`factorization` with the rank as the
factor, as ComfyUI does), OFT blocks zeros (blocks of :func:`factorization` of the output rows).
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
from diffusion.lora.load import module_adapters
from diffusion.lora.oft import OftAdapter
from diffusion.models import UNetModel
from diffusion.sampling.schedule import process_latent_in

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "AdamW": torch.optim.AdamW, "Adam": torch.optim.Adam, "SGD": torch.optim.SGD, "RMSprop": torch.optim.RMSprop,
}
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "MSE": F.mse_loss, "L1": F.l1_loss, "Huber": F.huber_loss, "SmoothL1": F.smooth_l1_loss,
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: Training algorithms (TrainLoraNode's ``algorithm`` choices).
ALGORITHMS = ("LoRA", "LoHa", "LoKr", "OFT")
#: The parts each algorithm trains, by the part names the LoRA loader reads (``diffusion.lora.load``).
PARTS = {"LoRA": ("down", "up"), "LoHa": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
         "LoKr": ("lokr_w1", "lokr_w2"), "OFT": ("oft_blocks",)}
#: File key suffix of each part (kohya for LoRA, LyCORIS for the rest).
_SUFFIX = {"down": ".lora_down.weight", "up": ".lora_up.weight"}


def _suffix(part: str) -> str:
    return _SUFFIX.get(part, "." + part)


def factorization(dimension: int, factor: int) -> tuple[int, int]:
    """``(m, n)``, ``m <= n``, ``m * n = dimension``: ``factor`` and the rest when it divides, else the most
    balanced split whose smaller side is at most ``factor`` (LyCORIS' rule, which ComfyUI's training uses)."""
    if factor > 0 and dimension % factor == 0:
        return min(factor, dimension // factor), max(factor, dimension // factor)
    limit = dimension if factor <= 0 else factor
    best = (1, dimension)
    for m in range(2, math.isqrt(dimension) + 1):
        if dimension % m == 0 and m <= limit:
            best = (m, dimension // m)
    return best


@dataclass
class TrainedLora:
    """A trained adapter (ComfyUI's LORA_MODEL): ``{UNet weight name: {part: tensor}}``, its algorithm and alpha."""

    factors: dict[str, dict[str, torch.Tensor]]
    alpha: float
    rank: int
    unet_config: Mapping[str, Any]
    steps: int = 0
    algorithm: str = "LoRA"

    def adapters(self) -> dict[str, Any]:
        """The weight adapters (the loader's own, from the parts a file holds), keyed by the UNet's parameter names."""
        out = {}
        for key, parts in self.factors.items():
            made = module_adapters(key, {**{p: t.detach() for p, t in parts.items()},
                                         "alpha": torch.tensor(self.alpha)})
            out[key] = made[key, "weight"]
        return out

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """The file layout: ``lora_unet_<LDM name>`` + ``.lora_down.weight`` / ``.hada_w1_a`` / ... and ``.alpha``."""
        names = unet_ldm_names(self.factors, self.unet_config)
        out: dict[str, torch.Tensor] = {}
        for key, parts in self.factors.items():
            stem = _kohya_stem(names[key])
            for part, tensor in parts.items():
                out[stem + _suffix(part)] = tensor.detach().contiguous()
            dtype = next(iter(parts.values())).dtype
            out[f"{stem}.alpha"] = torch.tensor(self.alpha, dtype=dtype)
        return out


@dataclass
class TrainingRun:
    """What :func:`train_lora` returns: the LoRA and the loss of every optimiser step."""

    lora: TrainedLora
    losses: list[float] = field(default_factory=list)


def target_layers(module: nn.Module) -> dict[str, nn.Linear]:
    """The layers a LoRA trains: every linear layer inside the UNet's transformer (attention) blocks."""
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear) and ".attentions." in name}


def _init_parts(algorithm: str, layer: nn.Linear, rank: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One layer's starting parts (no change to the layer), seeded."""
    out_f, in_f = layer.out_features, layer.in_features

    def kaiming(*shape: int) -> torch.Tensor:  # kaiming-uniform with a = sqrt(5), as LoRA initialises
        bound = 1.0 / math.sqrt(shape[-1])
        return (torch.rand(*shape, generator=generator) * 2 - 1).mul_(bound)

    if algorithm == "LoRA":
        return {"down": kaiming(rank, in_f), "up": torch.zeros(out_f, rank)}
    if algorithm == "LoHa":
        return {"hada_w1_a": torch.randn(out_f, rank, generator=generator) * 0.1,
                "hada_w1_b": torch.randn(rank, in_f, generator=generator),
                "hada_w2_a": torch.zeros(out_f, rank), "hada_w2_b": torch.randn(rank, in_f, generator=generator)}
    if algorithm == "LoKr":
        out_l, out_k = factorization(out_f, rank)
        in_l, in_k = factorization(in_f, rank)
        return {"lokr_w1": kaiming(out_l, in_l), "lokr_w2": torch.zeros(out_k, in_k)}
    size, count = factorization(out_f, rank)
    return {"oft_blocks": torch.zeros(count, size, size)}


def _init_factors(layers: Mapping[str, nn.Linear], algorithm: str, rank: int, dtype: torch.dtype,
                  generator: torch.Generator, existing: TrainedLora | None) -> dict[str, dict[str, nn.Parameter]]:
    factors = {}
    for name, layer in layers.items():
        key = name + ".weight"
        if existing is not None and key in existing.factors:
            parts = {p: t.detach().clone() for p, t in existing.factors[key].items()}
        else:
            parts = _init_parts(algorithm, layer, rank, generator)
        factors[key] = {p: nn.Parameter(t.to(dtype).to(layer.weight.device)) for p, t in parts.items()}
    return factors


def _delta(algorithm: str, parts: Mapping[str, torch.Tensor], alpha: float, weight: torch.Tensor) -> torch.Tensor:
    """The change the parts make to ``weight`` at strength 1, differentiable in the parts."""
    if algorithm == "OFT":
        return OftAdapter(parts["oft_blocks"], alpha).change(weight)
    adapter = module_adapters("layer", {**parts, "alpha": torch.tensor(alpha)})["layer", "weight"]
    return adapter.diff()


@contextmanager
def _lora_hooks(layers: Mapping[str, nn.Linear], factors: Mapping[str, Mapping[str, nn.Parameter]],
                algorithm: str, alpha: float) -> Iterator[None]:
    """Add each layer's adapter output (``x @ ΔWᵀ``; a LoRA's as ``x @ downᵀ @ upᵀ``) while the block runs."""
    def hook_for(layer: nn.Linear, parts: Mapping[str, nn.Parameter]) -> Callable[..., torch.Tensor]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            first = next(iter(parts.values()))
            x = args[0].to(first.dtype)
            if algorithm == "LoRA":
                change = F.linear(F.linear(x, parts["down"]), parts["up"]) * (alpha / parts["down"].shape[0])
            else:
                change = F.linear(x, _delta(algorithm, parts, alpha, layer.weight.detach()).to(x.dtype))
            return out + change.to(out.dtype)
        return hook

    handles = [layers[key.removesuffix(".weight")].register_forward_hook(
        hook_for(layers[key.removesuffix(".weight")], parts)) for key, parts in factors.items()]
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
        if existing.algorithm != algorithm:
            raise ValueError(f"the existing LoRA is a {existing.algorithm}; train it as {existing.algorithm}, "
                             f"not {algorithm}")
        rank = existing.rank
    factors = _init_factors(layers, algorithm, rank, DTYPES[lora_dtype], generator, existing)
    # OFT's alpha is a constraint on its rotation (0: none); the others scale by alpha / rank.
    alpha = float(existing.alpha if existing is not None else (0.0 if algorithm == "OFT" else rank))
    params = [p for parts in factors.values() for p in parts.values()]
    opt = OPTIMIZERS[optimizer](params, lr=learning_rate)
    loss_fn = LOSSES[loss_function]
    scaled = process_latent_in(latents.float(), model.latent_scale).to(model.device)
    run = TrainingRun(TrainedLora({}, alpha, rank, model.model.config, algorithm=algorithm))
    autocast = torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=training_dtype == "bf16")
    with ExitStack() as stack:
        stack.enter_context(_frozen(model.model))
        stack.enter_context(_lora_hooks(layers, factors, algorithm, alpha))
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
    run.lora = TrainedLora({k: {p: t.detach() for p, t in parts.items()} for k, parts in factors.items()}, alpha,
                           rank, model.model.config, steps, algorithm)
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
    """Write a trained adapter as a kohya (LoRA) or LyCORIS (LoHa, LoKr, OFT) ``.safetensors`` file, atomically."""
    from diffusion.save import write_tensors

    module = {"LoRA": "networks.lora", "LoHa": "lycoris.kohya", "LoKr": "lycoris.kohya", "OFT": "lycoris.kohya"}
    return write_tensors(path, lora.file_tensors(), {"ss_network_dim": str(lora.rank),
                                                     "ss_network_alpha": str(lora.alpha),
                                                     "ss_network_module": module[lora.algorithm],
                                                     "noodlebox.algorithm": lora.algorithm})


def read_trained_lora(path: str | os.PathLike[str], model: UNetModel) -> TrainedLora:
    """Read a LoRA / LoHa / LoKr / OFT file (as :func:`write_trained_lora` writes it) for ``model``, to train it
    further."""
    from safetensors import safe_open

    keys = [k for k, _ in model.model.named_parameters()]
    by_stem = {_kohya_stem(ldm): key for key, ldm in unet_ldm_names(keys, model.model.config).items()}
    factors: dict[str, dict[str, torch.Tensor]] = {}
    alpha: float | None = None
    algorithm = None
    with safe_open(str(path), "pt") as f:
        names = set(f.keys())
        rank_note = (f.metadata() or {}).get("ss_network_dim")
        for name in sorted(names):
            for kind, parts in PARTS.items():
                first = _suffix(parts[0])
                if not name.endswith(first):
                    continue
                stem = name.removesuffix(first)
                if stem not in by_stem:
                    raise ValueError(f"{Path(path).name}: {stem} matches no weight of this model")
                if algorithm not in (None, kind):
                    raise ValueError(f"{Path(path).name}: mixes {algorithm} and {kind} modules")
                algorithm = kind
                missing = [p for p in parts if stem + _suffix(p) not in names]
                if missing:
                    raise ValueError(f"{Path(path).name}: {stem} has no {missing[0]}")
                factors[by_stem[stem]] = {p: f.get_tensor(stem + _suffix(p)) for p in parts}
                if stem + ".alpha" in names:
                    alpha = float(f.get_tensor(stem + ".alpha"))
    if not factors or algorithm is None:
        raise ValueError(f"{Path(path).name}: not a LoRA (no lora_down, hada, lokr or oft_blocks weights)")
    first = next(iter(factors.values()))
    if algorithm == "LoRA":
        rank = int(first["down"].shape[0])
    elif algorithm == "LoHa":
        rank = int(first["hada_w1_b"].shape[0])
    else:
        rank = int(rank_note) if rank_note and rank_note.isdigit() else 1
    if alpha is None:
        alpha = 0.0 if algorithm == "OFT" else float(rank)
    return TrainedLora(factors, alpha, rank, model.model.config, algorithm=algorithm)
