"""A1111 hypernetworks: small MLPs added to the attention's key and value inputs.

The ``.pt`` file maps each width (an ``int``: the width of what keys and values are projected
from) to ``[key net state, value net state]``, each an ``nn.Sequential`` called ``linear`` whose
``Linear`` layers (``linear.<i>.weight``/``.bias``) sit between activations (and layer norms
when ``is_layer_norm``); ``activation_func``, ``is_layer_norm``, ``use_dropout``,
``activate_output`` and ``last_layer_dropout`` say how they are joined. The patch adds
``net(x) * strength`` to the key and value inputs of every attention of a matching width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffusion.files import atomic_path

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.Hardswish,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign, "mish": nn.Mish,
}
#: The layer structure of the seeded test files: width -> 2 x width -> width.
TEST_STRUCTURE = (1, 2, 1)


def _layer_number(name: str) -> int:
    tail = name.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _net(state: Mapping[str, torch.Tensor], options: Mapping[str, Any]) -> nn.Sequential:
    """One key or value MLP from its state (``linear.<i>.weight``...) and the file's options."""
    activation = options["activation_func"]
    names = sorted((k[: -len(".weight")] for k in state if k.endswith(".weight")), key=_layer_number)
    layers: list[nn.Module] = []
    i = 0
    while i < len(names):
        last, penultimate = i == len(names) - 1, i == len(names) - 2
        weight, bias = state[f"{names[i]}.weight"], state[f"{names[i]}.bias"]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight.float(), "bias": bias.float()})
        layers.append(linear)
        if activation != "linear" and (not last or options["activate_output"]):
            layers.append(ACTIVATIONS[activation]())
        if options["is_layer_norm"]:
            i += 1
            norm_weight, norm_bias = state[f"{names[i]}.weight"], state[f"{names[i]}.bias"]
            norm = nn.LayerNorm(norm_weight.shape[0])
            norm.load_state_dict({"weight": norm_weight.float(), "bias": norm_bias.float()})
            layers.append(norm)
        if options["use_dropout"] and not last and (not penultimate or options["last_layer_dropout"]):
            layers.append(nn.Dropout(p=0.3))
        i += 1
    return nn.Sequential(*layers).eval()


def load_hypernetwork(path: Path) -> dict[int, tuple[nn.Sequential, nn.Sequential]]:
    """The key and value nets of each width in an A1111 hypernetwork file (a one-line error when it is not one)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that is not plain tensors and containers, or not a torch file at all
        raise ValueError(f"{path.name} is not a hypernetwork file: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a hypernetwork file (no width table)")
    options = {"activation_func": data.get("activation_func", "linear"),
               "is_layer_norm": bool(data.get("is_layer_norm", False)),
               "use_dropout": bool(data.get("use_dropout", False)),
               "activate_output": bool(data.get("activate_output", False)),
               "last_layer_dropout": bool(data.get("last_layer_dropout", False))}
    if options["activation_func"] not in ACTIVATIONS:
        raise ValueError(f"{path.name}: unknown hypernetwork activation {options['activation_func']!r}")
    nets = {}
    for key, value in data.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            continue
        if not isinstance(value, (list, tuple)) or len(value) < 2:
            raise ValueError(f"{path.name}: width {width} needs a key net and a value net")
        nets[width] = (_net(value[0], options), _net(value[1], options))
    if not nets:
        raise ValueError(f"{path.name} has no hypernetwork layers")
    return nets


def hypernetwork_patch(nets: Mapping[int, tuple[nn.Module, nn.Module]], strength: float) -> Callable[..., Any]:
    """An ``attn1_patch``/``attn2_patch`` adding ``net(x) * strength`` to the key and value inputs of its width."""
    def patch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              extra_options: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pair = nets.get(k.shape[-1])
        if pair is None:
            return q, k, v
        key_net, value_net = (net.to(k.device, k.dtype) for net in pair)
        return q, k + key_net(k) * strength, v + value_net(v) * strength

    return patch


def write_hypernetwork(out: Path, *, base: Path | None = None, rank: int = 4, seed: int = 0,
                       arch: str | None = None, size: str = "tiny") -> Path:
    """A seeded random hypernetwork for ``base``'s UNet (its block widths and its text width), A1111's layout."""
    from diffusion.control.synthetic import _base_unet_config
    from diffusion.synthetic import _random_tensor

    _, config = _base_unet_config(base, "hypernetwork")
    widths = sorted({int(c) for c in config["block_out_channels"]} | {int(config["cross_attention_dim"])})
    data: dict[Any, Any] = {}
    for width in widths:
        pair = []
        for part in ("k", "v"):
            state = {}
            sizes = [width * m for m in TEST_STRUCTURE]
            for n, (fan_in, fan_out) in enumerate(pairwise(sizes)):
                name = f"linear.{2 * n}"  # ReLU between the linears takes the odd indices
                state[f"{name}.weight"] = _random_tensor(f"{width}.{part}.{name}.weight", (fan_out, fan_in), seed)
                state[f"{name}.bias"] = _random_tensor(f"{width}.{part}.{name}.bias", (fan_out,), seed)
            pair.append(state)
        data[width] = pair
    data.update(activation_func="relu", is_layer_norm=False, use_dropout=False, activate_output=False,
                last_layer_dropout=False, layer_structure=list(TEST_STRUCTURE), name=out.stem, step=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(data, tmp)
    return out
