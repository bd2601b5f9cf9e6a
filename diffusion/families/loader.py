"""Detecting and loading SD3/SD3.5 and Flux.1 files offline, in the three forms users have.

- all-in-one checkpoints: transformer under ``model.diffusion_model.``, text encoders under
  ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.``, VAE under ``first_stage_model.``;
- diffusion-model-only files: the transformer's keys with no prefix;
- separate text-encoder files: CLIP-L / CLIP-G (transformers layout) and T5-XXL (``shared``,
  ``encoder.block.*``), and separate 16-channel VAEs.

Every config is derived from the tensor shapes (``diffusion.families.sd3`` / ``flux``), the
weights are read one tensor at a time (``diffusion.checkpoint.TensorFile``, fp8 storage cast
per tensor to the compute dtype) into models built on the meta device.

A transformer may also be *stored* in fp8 (``storage=torch.float8_e4m3fn`` / ``float8_e5m2``,
UNETLoader's ``weight_dtype``): its Linear and Conv weights are cast once to fp8 at load and
diffusers' layerwise casting hooks upcast each layer to the compute dtype just for its own
forward (norms and the positional embedding stay in the compute dtype). Before any weight is
built, the bytes the load needs are compared with the memory available
(``diffusion.families.memory_check``): too little is a one-line error naming both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel
from diffusers.hooks import apply_layerwise_casting
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel
from transformers.utils import logging as hf_logging

from diffusion import convert
from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build
from diffusion.detect import derive_text_config, derive_vae_config
from diffusion.families import flow, flux, memory_check, sd3
from diffusion.families.keymap import to_diffusers
from diffusion.families.model import Family, FlowTextEncoder, TransformerModel
from diffusion.models import VAEModel
from diffusion.precision import Precision, place_model, resolve_precision

TEXT_PREFIXES = {
    "clip_l": "text_encoders.clip_l.transformer.",
    "clip_g": "text_encoders.clip_g.transformer.",
    "t5xxl": "text_encoders.t5xxl.transformer.",
}
VAE_PREFIX = "first_stage_model."
T5_MARKER = "encoder.block.0.layer.0.SelfAttention.q.weight"
CLIP_MARKER = "text_model.encoder.layers.0.mlp.fc1.weight"
#: UNETLoader's ``weight_dtype`` choices -> the dtype the transformer's weights are stored in (None: compute dtype).
STORAGE_DTYPES: dict[str, torch.dtype | None] = {
    "default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
#: Layers kept in the compute dtype when the rest is stored in fp8 (norms are never hooked: not Linear/Conv).
_KEEP_IN_COMPUTE = ("pos_embed",)
Shapes = Mapping[str, tuple[int, ...]]


@dataclass
class TransformerLayout:
    """What an SD3/Flux file holds, from its shapes: the transformer (if any) and the other parts' prefixes."""

    family: Family
    variant: str
    prefix: str | None
    config: dict[str, Any] | None
    text: dict[str, str] = field(default_factory=dict)
    vae_prefix: str | None = None


def _family_module(family: str) -> Any:
    return sd3 if family == "sd3" else flux


def detect_transformer(shapes: Shapes) -> TransformerLayout | None:
    """The SD3/Flux layout of a file, or None when it holds no MMDiT or Flux transformer."""
    for prefix in (sd3.PREFIX, ""):
        for family, module in (("sd3", sd3), ("flux", flux)):
            if prefix + module.MARKER in shapes:
                config = module.config_from_shapes(shapes, prefix)
                text = {slot: p for slot, p in TEXT_PREFIXES.items() if any(k.startswith(p) for k in shapes)}
                vae = VAE_PREFIX if VAE_PREFIX + "decoder.conv_in.weight" in shapes else None
                return TransformerLayout(family, module.variant(config), prefix, config, text, vae)  # type: ignore[arg-type]
    return None


def _schedule(family: str, variant: str) -> flow.FlowSchedule:
    if family == "sd3":
        return flow.sd3_schedule(sd3.SHIFT, sd3.MULTIPLIER)
    return flow.flux_schedule(flux.SHIFT[variant])


def _dtypes(precision: str | Precision, device: torch.device) -> Precision:
    return precision if isinstance(precision, Precision) else resolve_precision(precision, device)


def _meta_transformer(layout: TransformerLayout, dtype: torch.dtype, storage: torch.dtype | None) -> torch.nn.Module:
    """The empty model; with fp8 ``storage`` its Linear/Conv layers carry upcast-per-forward hooks."""
    assert layout.config is not None
    cls = SD3Transformer2DModel if layout.family == "sd3" else FluxTransformer2DModel
    with init_empty_weights():
        model = cls(**layout.config)
    if storage is not None and storage != dtype:
        apply_layerwise_casting(model, storage, dtype, skip_modules_pattern=_KEEP_IN_COMPUTE)
    return model


def transformer_keys(shapes: Shapes, layout: TransformerLayout) -> list[str]:
    """The file keys of the layout's transformer."""
    assert layout.prefix is not None
    return [k for k in shapes if k.startswith(layout.prefix) and not (
        layout.prefix == "" and k.startswith(("text_encoders.", VAE_PREFIX)))]


def load_transformer(file: TensorFile, layout: TransformerLayout, dtype: torch.dtype,
                     device: torch.device, storage: torch.dtype | None = None) -> TransformerModel:
    """The transformer of an open file as a MODEL value, computing in ``dtype``, stored in ``storage`` if given."""
    assert layout.config is not None and layout.prefix is not None
    module = _family_module(layout.family)
    config = layout.config
    meta = _meta_transformer(layout, dtype, storage)
    stored = {k for k, p in [*meta.named_parameters(), *meta.named_buffers()] if p.dtype == storage}
    raw = {k: file.get(k) for k in transformer_keys(file.shapes, layout)}  # views of the file's map
    state = to_diffusers(raw, module.key_rules(config), layout.prefix)
    del raw
    state = {k: (v.to(storage if k in stored else dtype) if v.is_floating_point() else v) for k, v in state.items()}
    model = _build(lambda: meta, state, "diffusion model", file.path.name)
    return TransformerModel(
        model=model.to(device), family=layout.family, variant=layout.variant, config=config,
        schedule=_schedule(layout.family, layout.variant), latent_scale=module.VAE_SCALE,
        latent_shift=module.VAE_SHIFT, device=device, dtype=dtype,
        latent_channels=config["out_channels"] if layout.family == "sd3" else config["out_channels"] // 4,
    )


def t5_config_from_shapes(shapes: Shapes, prefix: str = "") -> dict[str, Any]:
    """``T5Config`` kwargs of a T5 v1.1 encoder under ``prefix`` (heads from the relative-position table)."""
    vocab, d_model = shapes[prefix + "shared.weight"]
    inner = shapes[prefix + T5_MARKER][0]
    heads = shapes[prefix + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][1]
    gated = prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    d_ff = shapes[prefix + ("encoder.block.0.layer.1.DenseReluDense.wi_0.weight" if gated
                            else "encoder.block.0.layer.1.DenseReluDense.wi.weight")][0]
    layers = {int(m[1]) for k in shapes if (m := re.match(re.escape(prefix) + r"encoder\.block\.(\d+)\.", k))}
    return {
        "vocab_size": vocab, "d_model": d_model, "d_kv": inner // heads, "d_ff": d_ff, "num_heads": heads,
        "num_layers": len(layers), "feed_forward_proj": "gated-gelu" if gated else "relu",
        "relative_attention_num_buckets": shapes[prefix + "encoder.block.0.layer.0.SelfAttention."
                                                 "relative_attention_bias.weight"][0],
        "is_encoder_decoder": False, "use_cache": False, "tie_word_embeddings": False,
    }


def _quiet_build(factory: Any, state: dict[str, torch.Tensor], what: str, name: str) -> Any:
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers warns about meta-device init on every model
    try:
        return _build(factory, state, what, name)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_t5(file: TensorFile, prefix: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A T5 encoder under ``prefix`` of an open file (the tied input embedding is ``shared``)."""
    config = T5Config(**t5_config_from_shapes(file.shapes, prefix))
    state = {k[len(prefix):]: file.get(k, dtype) for k in file.shapes if k.startswith(prefix)}
    state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
    return _quiet_build(lambda: T5EncoderModel(config), state, "T5", file.path.name).to(device)


def load_clip(file: TensorFile, prefix: str, slot: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A CLIP text model (with projection) under ``prefix``; ``slot`` (clip_l / clip_g) sets its activation."""
    config = derive_text_config(file.shapes, prefix, "hf")
    projection = file.shapes.get(prefix + "text_projection.weight")
    config.update(hidden_act="gelu" if slot == "clip_g" else "quick_gelu",
                  projection_dim=projection[0] if projection else config["hidden_size"],
                  pad_token_id=0 if slot == "clip_g" else 49407)
    # These files already use transformers' names (text_model.*, text_projection.weight).
    state = {k[len(prefix):]: file.get(k, dtype) for k in file.shapes
             if k.startswith(prefix) and not k.endswith("position_ids")}
    if "text_projection.weight" not in state:  # some CLIP-L files leave it out; ComfyUI's L pooled never uses it
        state["text_projection.weight"] = torch.eye(config["projection_dim"], config["hidden_size"], dtype=dtype)
    model = _quiet_build(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**config)), state, slot, file.path.name)
    return model.to(device)


def load_vae16(file: TensorFile, prefix: str, family: str, dtype: torch.dtype, device: torch.device) -> VAEModel:
    """The 16-channel VAE under ``prefix`` with its family's scale (the shift is the MODEL's)."""
    config = derive_vae_config(file.shapes, prefix)
    if config["latent_channels"] != 16:
        raise CheckpointError(f"{file.path.name}: a {config['latent_channels']}-channel VAE, "
                              f"not the 16-channel one SD3/Flux use")
    module = _family_module(family)
    config.update(use_quant_conv=prefix + "quant_conv.weight" in file.shapes,
                  use_post_quant_conv=prefix + "post_quant_conv.weight" in file.shapes,
                  scaling_factor=module.VAE_SCALE, shift_factor=module.VAE_SHIFT)
    state = convert.vae_to_diffusers({k: file.get(k, dtype) for k in file.shapes if k.startswith(prefix)}, config)
    model = _build(lambda: AutoencoderKL(**config), state, "VAE", file.path.name)
    return VAEModel(place_model(model, dtype, device), module.VAE_SCALE, device, dtype)


@dataclass
class LoadedTransformerCheckpoint:
    """The parts of an all-in-one SD3/Flux checkpoint (any may be absent)."""

    path: str
    layout: TransformerLayout
    model: TransformerModel | None
    clip: FlowTextEncoder | None
    vae: VAEModel | None

    @property
    def unet(self) -> TransformerModel | None:
        """The MODEL, under the name ``diffusion.models.LoadedCheckpoint`` gives it."""
        return self.model

    @property
    def arch(self) -> str:
        """The family (``sd3`` / ``flux``)."""
        return self.layout.family


def _detect_or_fail(file: TensorFile) -> TransformerLayout:
    layout = detect_transformer(file.shapes)
    if layout is None:
        raise CheckpointError(f"{file.path.name}: no SD3 (joint_blocks.*) or Flux (double_blocks.*) transformer")
    return layout


def load_transformer_checkpoint(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                                device: torch.device | str = "cpu",
                                parts: tuple[str, ...] = ("model", "clip", "vae"),
                                available: int | None = None, freeable: int = 0) -> LoadedTransformerCheckpoint:
    """Load an all-in-one SD3/Flux checkpoint's transformer (``model``), text encoders and VAE.

    ``available``: the free memory measured by the caller (None: measure now); ``freeable``: bytes
    the caller can free (the model cache's other models), counted as available.
    """
    device = torch.device(device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        return load_open_checkpoint(file, _dtypes(precision, device), device, set(parts), available=available,
                                    freeable=freeable)


def checkpoint_bytes(file: TensorFile, layout: TransformerLayout, dtypes: Precision, parts: set[str],
                     storage: torch.dtype | None = None) -> int:
    """Bytes the asked-for parts of an open SD3/Flux file take once loaded (from its header alone)."""
    total = 0
    if parts & {"model", "unet"} and layout.prefix is not None:
        keys = transformer_keys(file.shapes, layout)
        total += memory_check.tensor_bytes(file.shapes, file.dtypes, keys, storage or dtypes.unet)
    if "clip" in parts:
        for prefix in layout.text.values():
            keys = [k for k in file.shapes if k.startswith(prefix)]
            total += memory_check.tensor_bytes(file.shapes, file.dtypes, keys, dtypes.text)
    if "vae" in parts and layout.vae_prefix is not None:
        keys = [k for k in file.shapes if k.startswith(layout.vae_prefix)]
        total += memory_check.tensor_bytes(file.shapes, file.dtypes, keys, dtypes.vae)
    return total


def load_open_checkpoint(file: TensorFile, dtypes: Precision, device: torch.device,
                         parts: set[str], *, available: int | None = None,
                         freeable: int = 0) -> LoadedTransformerCheckpoint:
    """The asked-for parts (``model`` or ``unet``, ``clip``, ``vae``) of an open SD3/Flux checkpoint.

    Fails with :class:`~diffusion.families.memory_check.NotEnoughMemory` before reading any
    weight when they would not fit in ``available`` (None: measured now) plus ``freeable``.
    """
    layout = _detect_or_fail(file)
    memory_check.require(checkpoint_bytes(file, layout, dtypes, parts), file.path.name, "checkpoint",
                         available=available, freeable=freeable)
    model = load_transformer(file, layout, dtypes.unet, device) if parts & {"model", "unet"} else None
    clip = None
    if "clip" in parts and layout.text:
        encoders = {slot: (load_t5(file, p, dtypes.text, device) if slot == "t5xxl"
                           else load_clip(file, p, slot, dtypes.text, device)) for slot, p in layout.text.items()}
        clip = FlowTextEncoder(layout.family, encoders.get("clip_l"), encoders.get("clip_g"), encoders.get("t5xxl"))
    vae = None
    if "vae" in parts and layout.vae_prefix is not None:
        vae = load_vae16(file, layout.vae_prefix, layout.family, dtypes.vae, device)
    return LoadedTransformerCheckpoint(str(file.path), layout, model, clip, vae)


def load_diffusion_model(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                         device: torch.device | str = "cpu", weight_dtype: str = "default",
                         available: int | None = None, freeable: int = 0) -> TransformerModel:
    """Load a diffusion-model-only SD3/Flux file (or the transformer of an all-in-one file).

    ``weight_dtype`` is UNETLoader's choice (:data:`STORAGE_DTYPES`): ``default`` stores the
    weights in the compute dtype, the fp8 ones store Linear/Conv weights in fp8 and upcast
    them per layer for compute. ``available`` / ``freeable``: as :func:`load_transformer_checkpoint`.
    """
    if weight_dtype not in STORAGE_DTYPES:
        raise CheckpointError(f"unknown weight_dtype {weight_dtype!r}; expected one of {', '.join(STORAGE_DTYPES)}")
    device = torch.device(device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        layout = _detect_or_fail(file)
        dtypes = _dtypes(precision, device)
        storage = STORAGE_DTYPES[weight_dtype]
        needed = checkpoint_bytes(file, layout, dtypes, {"model"}, storage)
        memory_check.require(needed, file.path.name, "diffusion model", available=available,
                             freeable=freeable)
        return load_transformer(file, layout, dtypes.unet, device, storage)


def file_bytes(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
               device: torch.device | str = "cpu", weight_dtype: str = "default",
               parts: tuple[str, ...] = ("model", "clip", "vae")) -> int | None:
    """Bytes loading ``parts`` of an SD3/Flux file takes, or None when it holds no transformer (header only).

    A separate text-encoder file (CLIP or T5) counts whole at the text dtype.
    """
    dtypes = _dtypes(precision, torch.device(device))
    with TensorFile(path) as file:
        layout = detect_transformer(file.shapes)
        if layout is not None:
            return checkpoint_bytes(file, layout, dtypes, set(parts), STORAGE_DTYPES.get(weight_dtype))
        if text_encoder_kind(file.shapes) is not None:
            return memory_check.tensor_bytes(file.shapes, file.dtypes, file.shapes, dtypes.text)
    return None


def text_encoder_kind(shapes: Shapes) -> str | None:
    """``t5xxl`` or ``clip`` for a separate text-encoder file, None for anything else."""
    if T5_MARKER in shapes and "shared.weight" in shapes:
        return "t5xxl"
    if CLIP_MARKER in shapes:
        return "clip"
    return None


def load_text_encoders(paths: Mapping[str, str | os.PathLike[str]], family: Family, *,
                       precision: str | Precision = "auto", device: torch.device | str = "cpu",
                       available: int | None = None, freeable: int = 0) -> FlowTextEncoder:
    """Separate text-encoder files by slot (``clip_l``, ``clip_g``, ``t5xxl``) as one CLIP value.

    A file in the wrong slot (a T5 given as CLIP-L, a CLIP as T5) is refused with a one-line
    reason; SD3 takes any of the three, Flux CLIP-L and T5 only. Too little memory for them
    all is refused before any is read (``available`` / ``freeable``: as for the checkpoint).
    """
    device = torch.device(device)
    dtypes = _dtypes(precision, device)
    allowed = ("clip_l", "clip_g", "t5xxl") if family == "sd3" else ("clip_l", "t5xxl")
    models: dict[str, torch.nn.Module] = {}
    needed = 0
    for slot, path in paths.items():  # every file checked (and sized) before any is read
        if slot not in allowed:
            raise CheckpointError(f"{family} has no {slot} text encoder (it takes {', '.join(allowed)})")
        with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
            kind = text_encoder_kind(file.shapes)
            if kind is None:
                raise CheckpointError(f"{file.path.name}: not a CLIP or T5 text encoder")
            if (kind == "t5xxl") != (slot == "t5xxl"):
                raise CheckpointError(f"{file.path.name}: a {'T5' if kind == 't5xxl' else 'CLIP'} file "
                                      f"given for the {slot} slot")
            needed += memory_check.tensor_bytes(file.shapes, file.dtypes, file.shapes, dtypes.text)
    names = ", ".join(Path(p).name for p in paths.values())
    memory_check.require(needed, names, "text encoders", available=available, freeable=freeable)
    for slot, path in paths.items():
        with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
            models[slot] = (load_t5(file, "", dtypes.text, device) if slot == "t5xxl"
                            else load_clip(file, "", slot, dtypes.text, device))
    return FlowTextEncoder(family, models.get("clip_l"), models.get("clip_g"), models.get("t5xxl"))


def sd3_slots(paths: list[str | os.PathLike[str]]) -> dict[str, str | os.PathLike[str]]:
    """Which of up to three text-encoder files is CLIP-L, CLIP-G and T5-XXL, from their weights.

    T5 is told by its keys; a CLIP by its width (768: L, 1280: G), or for our synthetic test
    files by their ``noodlebox.part`` metadata; other CLIPs take the L then the G slot in the
    order given.
    """
    slots: dict[str, str | os.PathLike[str]] = {}
    unsure: list[str | os.PathLike[str]] = []
    for path in paths:
        with TensorFile(path) as file:
            kind = text_encoder_kind(file.shapes)
            if kind is None:
                raise CheckpointError(f"{file.path.name}: not a CLIP or T5 text encoder")
            if kind == "t5xxl":
                slot = "t5xxl"
            else:
                width = file.shapes["text_model.embeddings.token_embedding.weight"][1]
                slot = {768: "clip_l", 1280: "clip_g"}.get(width, "")
                if not slot and file.metadata.get("noodlebox.part") in ("clip_l", "clip_g"):
                    slot = file.metadata["noodlebox.part"]  # our own test files say which they are
            if not slot:
                unsure.append(path)
                continue
            if slot in slots:
                raise CheckpointError(f"{file.path.name}: a second {slot} file")
            slots[slot] = path
    for path in unsure:
        free = [s for s in ("clip_l", "clip_g") if s not in slots]
        if not free:
            raise CheckpointError(f"{Path(path).name}: more CLIP files than SD3 has CLIP slots")
        slots[free[0]] = path
    return slots
