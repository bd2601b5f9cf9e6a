"""Control models (ControlNet, T2I-Adapter) and the control applied to one conditioning entry.

A :class:`ControlModel` is what ControlNetLoader gives (CONTROL_NET): a diffusers
``ControlNetModel`` or ``T2IAdapter`` plus the facts the sampler needs. A :class:`Control`
is that model set on a conditioning entry (``options["control"]``) with its hint image,
strength and timestep range, chained to the control that was there before
(``previous``), as ComfyUI chains ``previous_controlnet``.

At each UNet call :meth:`Control.residuals` gives what the chain adds to the UNet:

- a ControlNet sees the same scaled input, timestep, cross-attention and SDXL ADM vector
  as the UNet, and its hint image resized to the latent's size times 8 (centre crop,
  ``nearest-exact``, as ComfyUI's ``common_upscale``); its zero-convolution outputs are
  added to the UNet's skip connections and to the middle block's output;
- a T2I-Adapter sees only the hint (resized the same way, rounded up to its pixel-unshuffle
  factor; averaged to grey for one-channel adapters); its features, computed once per hint
  size, are added after the last layer of each down block (and the middle block for SDXL);
- every residual is multiplied by the control's strength, and a control outside its
  timestep range (sigma above ``start_percent``'s or below ``end_percent``'s) adds nothing;
  the chain's residuals are summed;
- a union ControlNet runs set to its control type (``diffusion.control.union``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from diffusion.control.union import type_index, union_call
from diffusion.resize import upscale

Kind = Literal["controlnet", "t2i_adapter"]
#: How ComfyUI resizes hint images for control models.
HINT_UPSCALE = "nearest-exact"
#: Pixels per latent pixel of the SD-family VAEs.
LATENT_DOWNSCALE = 8


@dataclass(eq=False)
class ControlModel:
    """A loaded control model (CONTROL_NET).

    ``arch`` is the SD family it was made for (``sd1``, ``sd2``, ``sdxl``), ``block_channels``
    the widths of the UNet levels it fits and ``context_dim`` its cross-attention width
    (None for T2I-Adapters). ``hint_channels`` is the number of image channels it reads,
    ``unshuffle`` a T2I-Adapter's pixel-unshuffle factor. ``union_type`` is the control
    type a union ControlNet is set to (SetUnionControlNetType; None = auto). A model that exists
    only together with a UNet (a control-LoRA) has no ``module`` but a ``builder``; the sampler
    asks :meth:`for_model` for the model to run. ``global_pool`` averages a ControlNet's residuals
    over the image (shuffle ControlNets, which ComfyUI recognises by a name ending in ``_shuffle``).
    """

    kind: Kind
    module: torch.nn.Module
    arch: str
    block_channels: tuple[int, ...]
    context_dim: int | None
    device: torch.device
    dtype: torch.dtype
    hint_channels: int = 3
    unshuffle: int = 8
    layout: str = ""
    union_type: str | None = None
    global_pool: bool = False
    #: A union ControlNet's own parts (``diffusion.control.union.UnionParts``); None for other models.
    union: Any = field(default=None, repr=False)
    builder: Callable[[Any], ControlModel] | None = field(default=None, repr=False)
    _built: dict[Any, ControlModel] = field(default_factory=dict, repr=False)
    _build_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def for_model(self, unet: Any) -> ControlModel:
        """The control model to run with ``unet`` (a ``diffusion.models.UNetModel``): itself, or one built for it."""
        if self.builder is None:
            return self
        key = (id(unet.model), tuple(sorted((k, v) for k, v in unet.weight_patches.items())))
        with self._build_lock:
            if key not in self._built:
                self._built[key] = self.builder(unet)
            return self._built[key]

    def describe(self) -> str:
        """A short description for messages: kind, family and level widths."""
        widths = "/".join(str(c) for c in self.block_channels)
        name = "ControlNet" if self.kind == "controlnet" else "T2I-Adapter"
        return f"{name} for {self.arch} (levels {widths})"

    def with_union_type(self, union_type: str | None) -> ControlModel:
        """A copy (same module) set to another union control type (checked against a union model's types)."""
        if self.union is not None:
            type_index(union_type, self.union)
        return dataclasses.replace(self, union_type=union_type)


@dataclass
class Residuals:
    """What a control chain adds to one UNet call.

    ``down`` and ``mid`` are ControlNet residuals (diffusers' ``down_block_additional_residuals``
    and ``mid_block_additional_residual``); ``adapter`` holds T2I-Adapter features, one per down
    block, and ``adapter_mid`` the feature added after the middle block (SDXL adapters).
    """

    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    adapter: list[torch.Tensor] | None = None
    adapter_mid: torch.Tensor | None = None

    def add(self, other: Residuals) -> Residuals:
        """The sum of two residual sets (missing parts count as zero)."""
        def plus(a: Any, b: Any) -> Any:
            if a is None:
                return b
            if b is None:
                return a
            if isinstance(a, list):
                if len(a) != len(b):
                    raise ValueError("two chained control models of different shapes cannot be combined")
                return [x + y for x, y in zip(a, b, strict=True)]
            return a + b

        return Residuals(plus(self.down, other.down), plus(self.mid, other.mid),
                         plus(self.adapter, other.adapter), plus(self.adapter_mid, other.adapter_mid))

    @property
    def empty(self) -> bool:
        """True when nothing is added."""
        return self.down is None and self.mid is None and self.adapter is None and self.adapter_mid is None


@dataclass(frozen=True)
class UNetInput:
    """What a control model sees of one UNet call: scaled latent, timesteps, sigma, conds, batch count."""

    x: torch.Tensor
    timesteps: torch.Tensor
    sigma: float
    context: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] | None
    jobs: int


@dataclass(eq=False)
class Control:
    """A control model applied to a conditioning entry (the ``"control"`` value of its options).

    ``hint`` is the IMAGE ([B, H, W, C], 0..1); ``percent_range`` is (start, end) as fractions
    of the denoising process. Compared by identity: entries that share a Control share UNet calls.
    """

    model: ControlModel
    hint: torch.Tensor
    strength: float = 1.0
    percent_range: tuple[float, float] = (0.0, 1.0)
    previous: Control | None = None
    vae: Any = None
    #: The model the sampler runs (``model.for_model(unet)``), set when sampling starts.
    realized: ControlModel | None = field(default=None, repr=False)
    _hints: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    _features: dict[tuple[int, int], list[torch.Tensor]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def chain(self) -> list[Control]:
        """This control and those before it, oldest first."""
        found: list[Control] = []
        current: Control | None = self
        while current is not None:
            found.append(current)
            current = current.previous
        return found[::-1]

    def residuals(self, call: UNetInput, percent_to_sigma: Callable[[float], float]) -> Residuals:
        """What the whole chain adds to one call; ``percent_to_sigma`` is the sampled model's schedule converter."""
        total = Residuals()
        for control in self.chain():
            high, low = percent_to_sigma(control.percent_range[0]), percent_to_sigma(control.percent_range[1])
            if control.strength == 0.0 or call.sigma > high or call.sigma < low:
                continue
            mine = control._controlnet(call) if control.model.kind == "controlnet" else control._adapter(call)
            total = total.add(mine)
        return total

    # -- the hint ---------------------------------------------------------------------------------

    @property
    def running(self) -> ControlModel:
        """The model that runs: the one built for the sampled UNet, else :attr:`model`."""
        return self.realized or self.model

    def _hint_for(self, height: int, width: int) -> torch.Tensor:
        """The hint resized for a latent of ``height`` x ``width`` ([B, C, H*8, W*8], model dtype), cached."""
        key = (height, width)
        model = self.running
        with self._lock:
            if key not in self._hints:
                step = model.unshuffle if model.kind == "t2i_adapter" else 1
                out_h = -(-height * LATENT_DOWNSCALE // step) * step
                out_w = -(-width * LATENT_DOWNSCALE // step) * step
                image = self.hint.movedim(-1, 1).float()
                resized = upscale(image, out_w, out_h, HINT_UPSCALE, "center")
                if model.hint_channels == 1 and resized.shape[1] > 1:
                    resized = resized.mean(dim=1, keepdim=True)
                elif resized.shape[1] != model.hint_channels:
                    resized = resized[:, : model.hint_channels]
                self._hints[key] = resized.to(model.device, model.dtype)
            return self._hints[key]

    def _batched_hint(self, hint: torch.Tensor, batch: int, jobs: int) -> torch.Tensor:
        """The hint for a call of ``batch`` latents made of ``jobs`` equal parts (a batch of 1 broadcasts)."""
        if hint.shape[0] == 1:
            return hint
        per_job = batch // max(1, jobs)
        if hint.shape[0] != per_job:
            raise ValueError(f"the control hint image has a batch of {hint.shape[0]} but the latent has {per_job}; "
                             "use one hint image or one per latent")
        return hint.repeat(jobs, 1, 1, 1) if jobs > 1 else hint

    # -- the two kinds ----------------------------------------------------------------------------

    def _controlnet(self, call: UNetInput) -> Residuals:
        model = self.running
        hint = self._batched_hint(self._hint_for(*call.x.shape[-2:]), call.x.shape[0], call.jobs)
        kwargs: dict[str, Any] = {}
        if call.added_cond_kwargs is not None:
            kwargs["added_cond_kwargs"] = {k: v.to(model.device) for k, v in call.added_cond_kwargs.items()}
        union = nullcontext() if model.union is None else union_call(model.module, model.union, model.union_type)
        with torch.no_grad(), union:
            down, mid = model.module(call.x.to(model.device, model.dtype), call.timesteps.to(model.device),
                                     encoder_hidden_states=call.context.to(model.device, model.dtype),
                                     controlnet_cond=hint, return_dict=False, **kwargs)
        def scaled(residual: torch.Tensor) -> torch.Tensor:
            if model.global_pool:
                residual = residual.mean(dim=(2, 3), keepdim=True).expand_as(residual)
            return residual.float() * self.strength

        return Residuals(down=[scaled(d) for d in down], mid=scaled(mid))

    def _adapter(self, call: UNetInput) -> Residuals:
        height, width = call.x.shape[-2:]
        key = (height, width)
        with self._lock:
            features = self._features.get(key)
        if features is None:
            hint = self._hint_for(height, width)
            with torch.no_grad():
                features = [f.float() for f in self.running.module(hint)]
            with self._lock:
                self._features[key] = features
        batch = call.x.shape[0]
        scaled = [self._batched_hint(f, batch, call.jobs) * self.strength for f in features]
        levels = len(self.running.block_channels)
        mid = scaled[levels] if len(scaled) > levels else None
        return Residuals(adapter=scaled[:levels], adapter_mid=mid)
