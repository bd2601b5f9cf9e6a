"""MODEL and CLIP values for the transformer families (SD3/SD3.5, Flux.1).

:class:`TransformerModel` stands beside ``diffusion.models.UNetModel``: the diffusers
transformer, the family facts the sampler needs (flow schedule, latent scale and shift) and
the same patch surface (``weight_patches``, ComfyUI-shaped ``options``, cheap
:meth:`~TransformerModel.clone`). :class:`FlowTextEncoder` holds CLIP-L, CLIP-G and T5-XXL
(any of them may be absent) and builds the conditioning as ComfyUI's SD3 / Flux text
encoders do:

- SD3: CLIP-L and CLIP-G penultimate layers (no final norm) side by side, zero-padded to
  T5's width, then T5's tokens after them on the sequence axis; pooled = CLIP-L's and
  CLIP-G's pooled outputs side by side (G's projected, L's not);
- Flux: the conditioning is T5's output alone; pooled = CLIP-L's final pooled output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from diffusion.families.flow import FlowSchedule
from diffusion.patching import WeightAdapter, WeightPatches, add_patches, clone_options, patched_weights
from diffusion.t5_tokenizer import family_tokenizer
from diffusion.text import KINDS, _apply_weights, encode_stream
from diffusion.tokenizer import Chunk, PromptTokenizer

Family = Literal["sd3", "flux"]
#: Widths ComfyUI assumes for an absent CLIP (zeros in its place) and T5.
CLIP_L_WIDTH, CLIP_G_WIDTH, T5_WIDTH = 768, 1280, 4096
_L_SD3, _G_SD3 = KINDS["sdxl"]  # penultimate layer, no final norm; only G's pooled is projected
_L_FLUX = KINDS["sd1"][0]  # the last layer after the final norm, pooled not projected
_SLOTS = {"l": "clip_l", "g": "clip_g", "t5xxl": "t5"}  # token stream -> encoder attribute


@dataclass
class TransformerModel:
    """A flow-matching transformer (``SD3Transformer2DModel`` / ``FluxTransformer2DModel``) as a MODEL."""

    model: nn.Module
    family: Family
    variant: str
    config: dict[str, Any]
    schedule: FlowSchedule
    latent_scale: float
    latent_shift: float
    device: torch.device
    dtype: torch.dtype
    latent_channels: int = 16
    weight_patches: WeightPatches = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def clone(self) -> TransformerModel:
        """A new MODEL value on the same base module, with its own patch list and options."""
        return dataclasses.replace(self, weight_patches=dict(self.weight_patches), options=clone_options(self.options))

    def with_patches(self, adapters: Mapping[str, WeightAdapter], strength: float = 1.0,
                     strength_model: float = 1.0) -> TransformerModel:
        """A clone with ``adapters`` (keyed by the transformer's diffusers parameter names) after its patches."""
        out = self.clone()
        out.weight_patches = add_patches(self.weight_patches, adapters, strength, strength_model)
        return out

    @property
    def arch(self) -> str:
        """The family under the name the sampler reads (``sd3`` / ``flux``)."""
        return self.family

    @property
    def adm_channels(self) -> int:
        """Pooled width plus six 256-wide slots: the sampler then hands the pooled output over as ``text_embeds``."""
        return int(self.config["pooled_projection_dim"]) + 6 * 256

    @property
    def in_channels(self) -> int:
        """Latent channels the model takes (UNetModel's name for it)."""
        return self.latent_channels

    @property
    def context_dim(self) -> int:
        """Width of the text conditioning the model attends to."""
        return int(self.config["joint_attention_dim"])

    @property
    def inpaint(self) -> bool:
        """Transformer models here take no inpainting channels."""
        return False

    @contextmanager
    def use(self) -> Iterator[nn.Module]:
        """The transformer with this value's weight patches applied, callable as the sampler calls a UNet."""
        with patched_weights(self.model, self.weight_patches) as module:
            yield _UNetCall(module, self)

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, pooled: torch.Tensor,
                 guidance: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted velocity (``noise - x0``) for latents ``x`` [B, 16, H, W] at ``sigma`` [B]."""
        with torch.no_grad(), self.use() as call:
            return call.forward_flow(x, self.schedule.timestep(sigma), cond, pooled, guidance)


class _UNetCall(nn.Module):
    """The transformer behind the sampler's UNet call: ``(x, timestep, encoder_hidden_states=...,
    added_cond_kwargs={"text_embeds": pooled})`` -> ``(velocity,)``."""

    def __init__(self, module: nn.Module, owner: TransformerModel) -> None:
        super().__init__()
        self.inner = module
        self._owner = [owner]  # a list keeps it out of nn.Module's registry

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                added_cond_kwargs: Mapping[str, torch.Tensor] | None = None, return_dict: bool = False,
                down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
                **_: Any) -> tuple[torch.Tensor]:
        """One call as a diffusers UNet is called; the pooled output rides in ``text_embeds``.

        ``down_block_additional_residuals`` are an SD3 ControlNet's, one per transformer block
        (``diffusion.control.sd3``).
        """
        owner = self._owner[0]
        pooled = (added_cond_kwargs or {}).get("text_embeds")
        if pooled is None:
            pooled = torch.zeros(x.shape[0], owner.config["pooled_projection_dim"])
        guidance = (added_cond_kwargs or {}).get("guidance")
        return (self.forward_flow(x, timestep, encoder_hidden_states, pooled, guidance,
                                  down_block_additional_residuals),)

    def forward_flow(self, x: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor, pooled: torch.Tensor,
                     guidance: torch.Tensor | None = None,
                     control: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The velocity for ``x`` at model timestep ``timestep`` (sigma times the multiplier).

        ``control``: residuals added to the image tokens after each SD3 block (all but the last).
        """
        owner = self._owner[0]
        if x.shape[1] != owner.latent_channels:
            raise ValueError(f"this {owner.family} model takes {owner.latent_channels}-channel latents, "
                             f"got {x.shape[1]} channels (a latent from another model family?)")
        widths = (cond.shape[-1], pooled.shape[-1])
        if widths != (owner.context_dim, owner.config["pooled_projection_dim"]):
            raise ValueError(f"this {owner.family} model takes {owner.context_dim}-wide text with a "
                             f"{owner.config['pooled_projection_dim']}-wide pooled vector, got {widths[0]} and "
                             f"{widths[1]} (text encoders of another family, e.g. a CLIP loader's type?)")
        dtype = owner.dtype
        timestep = torch.as_tensor(timestep, device=x.device).to(dtype).reshape(-1).expand(x.shape[0])
        args = {"encoder_hidden_states": cond.to(dtype), "pooled_projections": pooled.to(x.device, dtype)}
        if control is not None:
            if owner.family != "sd3":
                raise ValueError(f"ControlNets for {owner.family} models are not supported yet")
            if len(control) != owner.config["num_layers"]:
                raise ValueError(f"the ControlNet gives {len(control)} block residuals for a model of "
                                 f"{owner.config['num_layers']} blocks")
            args["block_controlnet_hidden_states"] = [c.to(x.device, dtype) for c in control]
        if owner.family == "sd3":
            return self.inner(hidden_states=x.to(dtype), timestep=timestep, **args).sample.to(x.dtype)
        if owner.config.get("guidance_embeds"):
            # Flux dev's distilled guidance; ComfyUI's default when the conditioning sets none is 3.5.
            value = guidance if guidance is not None else torch.full((x.shape[0],), 3.5)
            args["guidance"] = value.to(x.device, dtype)
        packed, img_ids = pack_latents(x.to(dtype))
        txt_ids = torch.zeros(cond.shape[1], 3, dtype=dtype, device=x.device)
        out = self.inner(hidden_states=packed, timestep=timestep, img_ids=img_ids.to(x.device), txt_ids=txt_ids,
                         **args).sample
        return unpack_latents(out, x.shape).to(x.dtype)


def pack_latents(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux's 2x2 patches as tokens: [B, C, H, W] -> [B, H/2 * W/2, 4C], and their (0, row, col) ids."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"Flux latents need an even height and width, got {h}x{w}")
    tokens = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
    ids = torch.zeros(h // 2, w // 2, 3, dtype=x.dtype)
    ids[..., 1] = torch.arange(h // 2, dtype=x.dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, dtype=x.dtype)[None, :]
    return tokens, ids.reshape(-1, 3)


def unpack_latents(tokens: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for latents of ``shape``."""
    b, c, h, w = shape
    return tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def encode_t5(model: nn.Module, chunks: Sequence[Chunk]) -> torch.Tensor:
    """T5 encoder output [1, L, width] for one t5xxl chunk, with ComfyUI's prompt-weight interpolation."""
    (chunk,) = chunks
    ids = [int(item[0]) for item in chunk]
    weights = torch.tensor([float(item[1]) for item in chunk])
    rows = [ids]
    weighted = bool((weights != 1.0).any())
    if weighted:  # the empty prompt (end token, then pads) of the same length, in the same batch
        rows.append([1] + [0] * (len(ids) - 1))
    device = next(model.parameters()).device
    with torch.no_grad():
        z = model(input_ids=torch.tensor(rows, device=device)).last_hidden_state
    if weighted:
        z = _apply_weights(z[:1], weights[None].to(z.device), z[1])
    return z[:1]


@dataclass(frozen=True, eq=False)
class FlowTextEncoder:
    """The text encoders of an SD3 or Flux model as a CLIP value (any encoder may be missing)."""

    family: Family
    clip_l: nn.Module | None = None
    clip_g: nn.Module | None = None
    t5: nn.Module | None = None
    #: Weight patches keyed ``clip_l.<name>`` / ``clip_g.<name>`` / ``t5.<name>`` (the transformers models' names).
    weight_patches: WeightPatches = field(default_factory=dict)

    def clone(self) -> FlowTextEncoder:
        """A copy sharing the models (the value is immutable, so this is the value itself)."""
        return self

    @property
    def kind(self) -> str:
        """The family, under the name LoRA key maps read (``sd3`` / ``flux``)."""
        return self.family

    def with_patches(self, adapters: Mapping[str, WeightAdapter], strength: float = 1.0,
                     strength_model: float = 1.0) -> FlowTextEncoder:
        """A copy with ``adapters`` (keyed ``<slot>.<name>``) added after the patches it has."""
        return dataclasses.replace(self, weight_patches=add_patches(self.weight_patches, adapters, strength,
                                                                    strength_model))

    def with_weight_patches(self, patches: WeightPatches) -> FlowTextEncoder:
        """A copy whose weight patches are ``patches``."""
        return dataclasses.replace(self, weight_patches=dict(patches))

    def slot_patches(self, slot: str) -> WeightPatches:
        """The patches on one encoder (``clip_l``, ``clip_g`` or ``t5``), keyed by its own parameter names."""
        prefix = slot + "."
        return {k[len(prefix):]: v for k, v in self.weight_patches.items() if k.startswith(prefix)}

    def modules(self) -> list[nn.Module]:
        """The encoders present (the model cache sizes a cached value by these)."""
        return [m for m in (self.clip_l, self.clip_g, self.t5) if m is not None]

    def _streams(self) -> list[tuple[str, Any, nn.Module]]:
        if self.family == "sd3":
            found = [("l", _L_SD3, self.clip_l), ("g", _G_SD3, self.clip_g), ("t5xxl", None, self.t5)]
        else:
            found = [("l", _L_FLUX, self.clip_l), ("t5xxl", None, self.t5)]
        return [(key, spec, model) for key, spec, model in found if model is not None]

    def tokenize(self, text: str, embedding_dirs: Sequence[str] | None = ()) -> dict[str, list[Chunk]]:
        """Weighted tokens per stream (``l``, ``g``, ``t5xxl``) of the encoders present."""
        out: dict[str, list[Chunk]] = {}
        for key, spec, _ in self._streams():
            if spec is None:
                out[key] = family_tokenizer(self.family).tokenize_with_weights(text, embedding_dirs)
            else:
                tokenizer = PromptTokenizer(spec.pad_token, spec.embedding_key)
                out[key] = tokenizer.tokenize_with_weights(text, embedding_dirs)
        return out

    def encode_tokens(self, tokens: Mapping[str, Sequence[Chunk]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond [1, L, width], pooled [1, width'])`` from :meth:`tokenize`'s streams."""
        encoded: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for key, spec, model in self._streams():
            if key not in tokens or not tokens[key]:
                continue
            with patched_weights(model, self.slot_patches(_SLOTS[key])) as patched:
                if spec is None:
                    encoded[key] = (encode_t5(patched, tokens[key]), None)
                else:
                    encoded[key] = encode_stream(patched, spec, tokens[key])
        t5 = encoded.get("t5xxl", (None, None))[0]
        if self.family == "flux":
            if t5 is None:
                raise ValueError("Flux text encoding needs the T5-XXL encoder")
            pooled = encoded["l"][1] if "l" in encoded else torch.zeros(1, CLIP_L_WIDTH)
            return t5, pooled  # type: ignore[return-value]
        width = self.t5.config.d_model if self.t5 is not None else T5_WIDTH  # CLIP features pad to T5's width
        return _sd3_conditioning(encoded, t5, width)

    @property
    def cond_hooks(self) -> None:
        """No conditioning hooks (``SetClipHooks`` is for CLIP values)."""
        return None

    def encode(self, text: str, clip_skip: int | None = None,
               embedding_dirs: Sequence[str] | None = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one prompt for every stream (``CLIPTextEncode``); ``clip_skip`` does not apply here."""
        return self.encode_tokens(self.tokenize(text, embedding_dirs))


def _sd3_conditioning(encoded: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]],
                      t5: torch.Tensor | None, width: int = T5_WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's SD3 assembly: [L | G | zero pad to ``width``] on features, then T5 on the sequence axis."""
    l_out, l_pooled = encoded.get("l", (None, None))
    g_out, g_pooled = encoded.get("g", (None, None))
    lg: torch.Tensor | None = None
    if l_out is not None or g_out is not None:
        if l_out is not None and g_out is not None:
            lg = torch.cat([l_out, g_out.to(l_out.dtype)], dim=-1)
        elif l_out is not None:
            lg = l_out
        else:
            lg = torch.nn.functional.pad(g_out, (CLIP_L_WIDTH, 0))
        if lg.shape[-1] > width:
            raise ValueError(f"CLIP features ({lg.shape[-1]}) are wider than T5's ({width})")
        lg = torch.nn.functional.pad(lg, (0, width - lg.shape[-1]))
    pooled_parts = [l_pooled if l_pooled is not None else torch.zeros(1, CLIP_L_WIDTH),
                    g_pooled if g_pooled is not None else torch.zeros(1, CLIP_G_WIDTH)]
    pooled = torch.cat([p.float() for p in pooled_parts], dim=-1)
    if t5 is not None:
        cond = t5 if lg is None else torch.cat([lg.to(t5.dtype), t5], dim=-2)
    else:
        cond = lg if lg is not None else torch.zeros(1, 77, width)
    return cond, pooled
