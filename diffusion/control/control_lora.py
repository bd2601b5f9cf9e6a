"""SDXL control-LoRA files (``lora_controlnet``): a ControlNet stored as low-rank changes to the model's encoder.

Such a file holds, in the original ControlNet layout, an ``up``/``down`` pair for most
weights of the encoder, full tensors for the rest (biases, norms, the hint encoder, the zero
convolutions, ``middle_block_out``) and a ``lora_controlnet`` marker. The ControlNet exists only
together with a model: its encoder starts as the model's own weights (as the model is used,
weight patches included), each pair adds ``up @ down`` and each full tensor replaces its weight.
So the file loads as a :class:`~diffusion.control.models.ControlModel` without a module, and the
sampler builds (and caches) the ControlNet for the model it runs (:meth:`ControlModel.for_model`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ControlNetModel
from diffusers.loaders import single_file_utils as sfu

from diffusion import convert
from diffusion.checkpoint import CheckpointError, _build
from diffusion.control.models import ControlModel

StateDict = dict[str, torch.Tensor]
MARKER = "lora_controlnet"
_ENCODER = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")
_ADM_NAMES = {f"label_emb.0.{i}.{p}": f"add_embedding.linear_{n}.{p}" for i, n in ((0, 1), (2, 2))
              for p in ("weight", "bias")}


def control_lora_model(weights: StateDict, name: str, dtype: torch.dtype, device: torch.device) -> ControlModel:
    """A control-LoRA's :class:`ControlModel`, built for a model when sampling starts."""
    arch = "sdxl" if any(k.startswith("label_emb.") for k in weights) else "sd1"

    def build(unet: Any) -> ControlModel:
        return build_control_lora(weights, name, unet, dtype, device)

    hint_channels = weights["input_hint_block.0.weight"].shape[1]
    return ControlModel("controlnet", None, arch, (), None, device, dtype,  # type: ignore[arg-type]
                        hint_channels, 8, "control-lora", builder=build)


def build_control_lora(weights: StateDict, name: str, unet: Any, dtype: torch.dtype,
                       device: torch.device) -> ControlModel:
    """The ControlNet a control-LoRA makes of ``unet`` (a ``diffusion.models.UNetModel``)."""
    from diffusion.control.synthetic import controlnet_config_for

    unet_config = dict(unet.model.config)
    config = controlnet_config_for(unet_config)
    config["conditioning_channels"] = weights["input_hint_block.0.weight"].shape[1]
    with unet.use() as module:
        encoder = {k: v.detach().float().cpu() for k, v in module.state_dict().items() if k.startswith(_ENCODER)}
    names = convert.unet_ldm_names(encoder, {**unet_config, "up_block_types": []})
    ldm = {names[k]: v for k, v in encoder.items()}
    for key, value in weights.items():
        if key == MARKER or key.endswith(".up"):
            continue
        if key.endswith(".down"):
            target = key[: -len(".down")] + ".weight"
            up = weights.get(key[: -len(".down")] + ".up")
            if target not in ldm or up is None:
                raise CheckpointError(f"{name}: the control-LoRA changes {target!r}, which this model does not have")
            delta = up.float().flatten(1) @ value.float().flatten(1)
            ldm[target] = ldm[target] + delta.reshape(ldm[target].shape)
        else:
            ldm[key] = value.float()
    state = sfu.convert_controlnet_checkpoint(ldm, {"layers_per_block": unet_config["layers_per_block"]})
    state.update({new: ldm[old] for old, new in _ADM_NAMES.items() if old in ldm})
    state = {k: v.to(dtype) for k, v in state.items()}
    built = _build(lambda: ControlNetModel(**config), state, "control-LoRA", name).to(device)
    arch = "sdxl" if "add_embedding.linear_1.weight" in state else "sd1"
    return ControlModel("controlnet", built, arch, tuple(config["block_out_channels"]), config["cross_attention_dim"],
                        device, dtype, config["conditioning_channels"], 8, "control-lora")
