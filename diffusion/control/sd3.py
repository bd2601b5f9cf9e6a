"""SD3 ControlNets (diffusers' ``SD3ControlNetModel``): detection, loading and the call the sampler makes.

Files: the diffusers layout (``pos_embed.*``, ``pos_embed_input.proj.*``, ``context_embedder.*``,
``transformer_blocks.N.*``, ``controlnet_blocks.N.*``), as InstantX's and ComfyUI's SD3
ControlNets ship. The SD3.5 large (8b) form, without its own patch embedding and text
embedder, is refused in one line.

As ComfyUI runs them:

- the hint image (resized to the latent's size times 8) is VAE-encoded and brought into
  SD3's latent space, ``(latent - 0.0609) * 1.5305``, then patch-embedded by
  ``pos_embed_input`` and added to the image tokens;
- the pooled text vector is replaced by zeros; latent, timestep and text are the transformer's;
- the output of ControlNet block ``k`` goes to ``depth // blocks`` consecutive transformer
  blocks (one fewer for the last), ``depth`` being the ControlNet's width / 64: transformer
  block ``i`` (all but the last, which has no image output) gets entry ``i``, times the
  control's strength.

:class:`SD3ControlCall` stands where a UNet ControlNet module stands in a
:class:`~diffusion.control.models.ControlModel`, called as the control chain calls one;
its residuals reach the transformer as ``block_controlnet_hidden_states``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build
from diffusion.control.models import ControlModel
from diffusion.families.sd3 import HEAD_DIM, VAE_SCALE, VAE_SHIFT
from diffusion.precision import Precision, resolve_precision

#: Keys every SD3 ControlNet file has (Flux ControlNets have ``controlnet_blocks`` too, not ``pos_embed_input``).
MARKERS = ("controlnet_blocks.0.weight", "pos_embed_input.proj.weight")
ARCH = "sd3"

Shapes = Mapping[str, Sequence[int]]


def is_sd3_controlnet(keys: Any) -> bool:
    """True for the keys of an SD3 ControlNet file."""
    found = set(keys)
    return all(marker in found for marker in MARKERS)


def config_from_shapes(shapes: Shapes, name: str = "file") -> dict[str, Any]:
    """``SD3ControlNetModel`` kwargs for the tensors' shapes (CheckpointError for a form we cannot run)."""
    if "pos_embed.proj.weight" not in shapes or "context_embedder.weight" not in shapes:
        raise CheckpointError(f"{name}: SD3.5 large (8b) ControlNets, without their own patch and text "
                              "embedders, are not supported yet")
    hidden, in_channels, patch, _ = shapes["pos_embed.proj.weight"]
    hint_channels = shapes["pos_embed_input.proj.weight"][1]
    layers = sorted({int(m[1]) for k in shapes if (m := re.match(r"transformer_blocks\.(\d+)\.", k))})
    caption, joint = shapes["context_embedder.weight"]
    config: dict[str, Any] = {
        "sample_size": 128,
        "patch_size": patch,
        "in_channels": in_channels,
        "num_layers": len(layers),
        "attention_head_dim": HEAD_DIM,
        "num_attention_heads": hidden // HEAD_DIM,
        "joint_attention_dim": joint,
        "caption_projection_dim": caption,
        "pooled_projection_dim": shapes["time_text_embed.text_embedder.linear_1.weight"][1],
        "out_channels": in_channels,
        "extra_conditioning_channels": hint_channels - in_channels,
        "dual_attention_layers": tuple(sorted({int(m[1]) for k in shapes
                                               if (m := re.match(r"transformer_blocks\.(\d+)\.attn2\.", k))})),
        "qk_norm": "rms_norm" if any(".attn.norm_q." in k for k in shapes) else None,
    }
    if "pos_embed.pos_embed" in shapes:
        config["pos_embed_max_size"] = math.isqrt(shapes["pos_embed.pos_embed"][1])
    return config


def load_sd3_controlnet(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                        device: torch.device | str = "cpu") -> ControlModel:
    """Load an SD3 ControlNet file as a CONTROL_NET (a CheckpointError with a one-line reason otherwise)."""
    from diffusers import SD3ControlNetModel

    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        name = file.path.name
        if not is_sd3_controlnet(file.shapes):
            raise CheckpointError(f"{name}: not an SD3 ControlNet (no {MARKERS[1]})")
        config = config_from_shapes(file.shapes, name)
        state = {k: v.to(dtypes.unet) for k, v in file.read("", torch.float32).items()}
        if "pos_embed_max_size" not in config:  # no stored grid: the module's own sin-cos table, not a weight
            config["pos_embed_max_size"] = None
        net = _build(lambda: SD3ControlNetModel(**config), state, "SD3 ControlNet", name).to(device)
    hidden = config["num_attention_heads"] * HEAD_DIM
    return ControlModel("controlnet", SD3ControlCall(net), ARCH, (hidden,), config["joint_attention_dim"], device,
                        dtypes.unet, 3, 8, "sd3")


def with_vae(model: ControlModel, vae: Any) -> ControlModel:
    """The CONTROL_NET ``model`` set to encode its hints with ``vae`` (same weights); other models unchanged."""
    if not isinstance(model.module, SD3ControlCall):
        return model
    return dataclasses.replace(model, module=SD3ControlCall(model.module.net, vae))


def check_fits(model: ControlModel, transformer: nn.Module, arch: str) -> None:
    """Raise ``ValueError`` (one line) unless ``model`` is an SD3 ControlNet that fits ``transformer``."""
    if model.arch != ARCH:
        raise ValueError(f"the {model.describe()} does not fit this {arch} model; load a control model made for it")
    config = getattr(transformer, "config", {})
    if arch != ARCH or "joint_attention_dim" not in config:
        raise ValueError(f"an SD3 ControlNet does not fit this {arch} model; use it with an SD3/SD3.5 model")
    hidden = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    layers = int(config["num_layers"])
    depth = model.block_channels[0] // HEAD_DIM
    if (hidden, layers, int(config["joint_attention_dim"])) != (model.block_channels[0], depth, model.context_dim):
        raise ValueError(f"the SD3 ControlNet (width {model.block_channels[0]}, text {model.context_dim}) does not "
                         f"fit this SD3 model (width {hidden}, {layers} blocks, text {config['joint_attention_dim']})")


def block_residuals(outputs: Sequence[torch.Tensor], depth: int) -> list[torch.Tensor]:
    """One residual per transformer block (``depth`` of them) from the ControlNet blocks' outputs (see module doc)."""
    count = depth // len(outputs)
    spread: list[torch.Tensor] = []
    for k, out in enumerate(outputs):
        spread += [out] * (count - 1 if k == len(outputs) - 1 else count)
    spread = spread[:depth]
    return spread + [torch.zeros_like(outputs[-1])] * (depth - len(spread))


class SD3ControlCall(nn.Module):
    """An SD3 ControlNet called as the control chain calls a UNet ControlNet: ``-> (per-block residuals, 0)``.

    ``vae`` encodes the hint; without one the call is a one-line error. Encoded hints are kept
    per hint size (a hint is the same image at every step).
    """

    def __init__(self, net: nn.Module, vae: Any = None) -> None:
        super().__init__()
        self.net = net
        self._vae = [vae]  # a list keeps a VAE module out of this module's registry
        self._encoded: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()

    @property
    def vae(self) -> Any:
        """The VAE that encodes the hint (None: not set)."""
        return self._vae[0]

    def hint_latent(self, hint: torch.Tensor) -> torch.Tensor:
        """The hint image ([B, 3, H, W], 0..1) as SD3 latents, ``(vae latent - shift) * scale``."""
        from diffusion.vae import encode

        if self.vae is None:
            raise ValueError("an SD3 ControlNet needs a VAE to encode its hint: use ControlNetApplySD3 "
                             "(Apply Controlnet with VAE) or give ControlNetApplyAdvanced its vae input")
        key = tuple(hint.shape)
        with self._lock:
            cached = self._encoded.get(key)
        if cached is not None and torch.equal(cached[0], hint):
            return cached[1]
        latent = (encode(self.vae, hint.movedim(1, -1).float()) - VAE_SHIFT) * VAE_SCALE
        with self._lock:
            self._encoded[key] = (hint, latent)
        return latent

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, encoder_hidden_states: torch.Tensor,
                controlnet_cond: torch.Tensor, return_dict: bool = False,
                added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
                **_: Any) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-block residuals for one transformer call on latents ``x`` at ``timesteps`` with this text."""
        net = self.net
        param = next(net.parameters())
        device, dtype = param.device, param.dtype
        hint = self.hint_latent(controlnet_cond).to(device, dtype)
        if hint.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"the SD3 ControlNet hint encodes to {tuple(hint.shape[-2:])} latents but the latent is "
                             f"{tuple(x.shape[-2:])}")
        batch = x.shape[0]
        if hint.shape[0] not in (1, batch):
            raise ValueError(f"the control hint has a batch of {hint.shape[0]} for {batch} latents")
        timestep = torch.as_tensor(timesteps, device=device).to(dtype).reshape(-1).expand(batch)
        pooled = torch.zeros(batch, net.config.pooled_projection_dim, device=device, dtype=dtype)  # as ComfyUI
        (outputs,) = net(hidden_states=x.to(device, dtype), controlnet_cond=hint.expand(batch, -1, -1, -1),
                         encoder_hidden_states=encoder_hidden_states.to(device, dtype), pooled_projections=pooled,
                         timestep=timestep, return_dict=False)
        depth = (net.config.num_attention_heads * net.config.attention_head_dim) // HEAD_DIM
        return block_residuals(list(outputs), depth), torch.zeros(())
