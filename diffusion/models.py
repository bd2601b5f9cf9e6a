"""The loaded-model objects that flow between nodes as MODEL, CLIP and VAE.

Plain dataclasses around the diffusers / transformers modules plus the facts that are not
in the weights (architecture, prediction type, latent scale, noise schedule). Sampling
and text encoding live elsewhere (``diffusion.sampling``, ``diffusion.text``) and read
these fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from diffusion.patching import WeightAdapter, WeightPatches, add_patches, clone_options, patched_weights
from diffusion.sampling.schedule import DiscreteSchedule
from diffusion.text import ClipTextEncoder

#: Architecture families, named as ``diffusion.text.ClipTextEncoder`` names its kinds.
Arch = Literal["sd1", "sd2", "sdxl", "sdxl_refiner"]
Prediction = Literal["eps", "v"]

#: Latent scale factor per family (PROTOCOL.md 9.7).
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class UNetModel:
    """A denoising UNet and what the sampler needs to know about it.

    ``schedule`` is the model's discrete noise schedule (``diffusion.sampling.DiscreteSchedule``,
    made from ``prediction``). ``adm_channels`` is the width of SDXL's extra "ADM" vector
    (pooled text embedding plus size/crop/aesthetic embeddings: 2816 for SDXL base, 2560 for
    the refiner), None for SD1/SD2. ``in_channels`` is 9 for inpainting models (latent,
    mask, masked latent).

    A MODEL value is patchable (``diffusion.patching``): ``model`` is the base module that
    every :meth:`clone` shares, ``weight_patches`` the weight changes applied to it while it
    is used (:meth:`use`), ``options`` ComfyUI's ``model_options`` (CFG functions, wrappers,
    attention and block patches). Nodes never change a MODEL they were given: they clone it.
    """

    model: UNet2DConditionModel
    arch: Arch
    prediction: Prediction
    latent_scale: float
    device: torch.device
    dtype: torch.dtype
    in_channels: int = 4
    context_dim: int = 768
    adm_channels: int | None = None
    schedule: DiscreteSchedule = None  # type: ignore[assignment]  # set in __post_init__
    weight_patches: WeightPatches = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: ``zero123``, ``x4_upscaler`` or ``unclip``: SD models with their own extra inputs
    #: (``diffusion.detect.model_variant``).
    variant: str | None = None
    #: Maps cross-attention conds that are not ``context_dim`` wide (Stable Zero123's ``cc_projection``).
    context_projection: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if self.schedule is None:
            # SD1.x, SD2.x and SDXL all train on LDM's linear-beta schedule; only the prediction differs.
            self.schedule = DiscreteSchedule(prediction=self.prediction)

    def clone(self) -> UNetModel:
        """A new MODEL value on the same base module, with its own copy of the patch list and options."""
        return dataclasses.replace(self, weight_patches=dict(self.weight_patches), options=clone_options(self.options))

    def with_patches(self, adapters: Mapping[str, WeightAdapter], strength: float = 1.0,
                     strength_model: float = 1.0) -> UNetModel:
        """A clone with ``adapters`` (keyed by the UNet's parameter names) added after the patches it has."""
        out = self.clone()
        out.weight_patches = add_patches(self.weight_patches, adapters, strength, strength_model)
        return out

    @contextmanager
    def use(self) -> Iterator[UNet2DConditionModel]:
        """The base module with this value's weight patches applied (and no other patch set meanwhile)."""
        with patched_weights(self.model, self.weight_patches) as module:
            yield module  # type: ignore[misc]

    @property
    def inpaint(self) -> bool:
        """True for an inpainting model (extra mask and masked-image channels)."""
        return self.in_channels == 9


@dataclass
class VAEModel:
    """An autoencoder and the latent scale of the model family it was loaded with."""

    model: AutoencoderKL
    scale_factor: float
    device: torch.device
    dtype: torch.dtype
    #: torch.compile backend the decoder runs through (``--compile``); None: eager.
    compile_backend: str | None = None


@dataclass
class LoadedCheckpoint:
    """A single-file checkpoint: MODEL, CLIP and VAE (any part may be skipped at load time).

    ``clip`` holds the transformers text models as ``ClipTextEncoder(kind, clip_l, clip_g)``:
    SD1's CLIP-L and SD2's OpenCLIP ViT-H (all 24 layers) in ``clip_l``, SDXL's bigG (with
    its projection) in ``clip_g``.
    """

    path: str
    arch: Arch
    prediction: Prediction
    unet: UNetModel | None
    clip: ClipTextEncoder | None
    vae: VAEModel | None
    info: dict[str, Any] = field(default_factory=dict)

    def modules(self) -> list[torch.nn.Module]:
        """Every torch module held, for memory accounting."""
        found: list[torch.nn.Module] = []
        if self.unet is not None:
            found.append(self.unet.model)
        if self.clip is not None:
            found.extend(m for m in (self.clip.clip_l, self.clip.clip_g) if m is not None)
        if self.vae is not None:
            found.append(self.vae.model)
        return found
