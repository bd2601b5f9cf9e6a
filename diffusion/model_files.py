"""Loading the parts of a model from separate files: a UNet alone, text encoders alone, a diffusers folder.

- A UNet file (ComfyUI's ``diffusion_models`` folder) holds the LDM UNet keys either bare
  (``input_blocks.0.0.weight``) or under ``model.diffusion_model.``; it is read through the
  checkpoint loader as if it were a checkpoint with only a UNet.
- Text-encoder files (``text_encoders``) are transformers-layout CLIP models
  (``text_model.encoder.layers.*``, ``text_projection.weight`` for bigG): 768 wide is SD1's
  CLIP-L, 1024 SD2's ViT-H, 1280 SDXL's bigG. ``stable_diffusion`` takes one file, ``sdxl``
  two (CLIP-L and bigG, in either order).
- A diffusers folder (``model_index.json`` with ``unet/``, ``text_encoder/``, ``vae/`` ...)
  is read with diffusers' and transformers' own ``from_pretrained``, from local files only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.utils import logging as hf_logging

from diffusion import convert
from diffusion.checkpoint import CheckpointError, TensorFile, _as_checkpoint_errors, _build, _load_parts
from diffusion.detect import UNET_PREFIX, DetectionError, derive_text_config
from diffusion.models import LATENT_SCALE, UNetModel, VAEModel
from diffusion.precision import Precision, resolve_precision
from diffusion.text import ClipTextEncoder

#: ``CLIPLoader`` / ``DualCLIPLoader`` types read here.
CLIP_TYPES = ("stable_diffusion", "sdxl")
_WIDTH_SLOT = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}


class _RenamedFile:
    """A :class:`TensorFile` seen under other key names (``new name -> name in the file``)."""

    def __init__(self, file: TensorFile, names: Mapping[str, str]) -> None:
        self.path, self.metadata, self._file, self._names = file.path, file.metadata, file, dict(names)
        self.shapes = {new: file.shapes[old] for new, old in self._names.items()}
        self.dtypes = {new: file.dtypes[old] for new, old in self._names.items()}

    def get(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor by its new name."""
        return self._file.get(self._names[key], dtype)

    def read(self, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Every tensor whose new name starts with ``prefix``."""
        return {k: self.get(k, dtype) for k in self.shapes if k.startswith(prefix)}


def _dtypes(precision: str | Precision, device: torch.device) -> Precision:
    return precision if isinstance(precision, Precision) else resolve_precision(precision, device)


def load_unet_file(path: str | os.PathLike[str], *, precision: str | Precision = "auto",
                   device: torch.device | str = "cpu", prediction: str | None = None) -> UNetModel:
    """A MODEL from a file holding only an SD1/SD2/SDXL UNet in the LDM layout (bare or prefixed keys)."""
    device = torch.device(device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        if any(k.startswith(UNET_PREFIX) for k in file.shapes):
            names = {k: k for k in file.shapes if k.startswith(UNET_PREFIX)}
        elif "input_blocks.0.0.weight" in file.shapes:
            names = {UNET_PREFIX + k: k for k in file.shapes}
        elif "conv_in.weight" in file.shapes:
            raise CheckpointError(f"{file.path.name}: a diffusers-layout UNet file; put its folder in "
                                  "models/diffusers and use DiffusersLoader")
        else:
            raise CheckpointError(f"{file.path.name}: not a Stable Diffusion UNet (no input_blocks.* keys)")
        loaded = _load_parts(_RenamedFile(file, names), _dtypes(precision, device), device,  # type: ignore[arg-type]
                             prediction, {"unet"})
    assert loaded.unet is not None
    return loaded.unet


def _text_model(file: TensorFile, dtype: torch.dtype, device: torch.device) -> tuple[str, torch.nn.Module]:
    """``(slot, model)`` for one transformers-layout CLIP text-encoder file; the slot comes from its width."""
    name = file.path.name
    try:
        config = derive_text_config(file.shapes, "", "hf")
    except DetectionError as exc:
        raise CheckpointError(f"{name}: not a CLIP text encoder in the transformers layout ({exc})") from None
    # By width for real models; other widths (small test models): a projection means bigG.
    projected = "text_projection.weight" in file.shapes
    slot = _WIDTH_SLOT.get(config["hidden_size"]) or ("clip_g" if projected else "clip_l")
    with_projection = slot == "clip_g"
    if slot != "clip_l":  # OpenCLIP models: GELU, padded with token 0 (as the checkpoint loader sets them)
        config.update(hidden_act="gelu", pad_token_id=0)
    if with_projection:
        projection = file.shapes.get("text_projection.weight")
        if projection is None:
            raise CheckpointError(f"{name}: the bigG text encoder has no text_projection.weight")
        config["projection_dim"] = projection[0]
    raw = {"te." + k: file.get(k, dtype) for k in file.shapes}  # the converter wants a prefix to take off
    state = convert.clip_to_transformers(raw, "te.", with_projection)
    factory = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = _build(lambda: factory(CLIPTextConfig(**config)), state, slot, name)
    finally:
        hf_logging.set_verbosity(verbosity)
    return slot, model.to(device)


def load_text_encoders(paths: Sequence[str | os.PathLike[str]], clip_type: str, *,
                       precision: str | Precision = "auto", device: torch.device | str = "cpu") -> ClipTextEncoder:
    """A CLIP from one (``stable_diffusion``) or two (``sdxl``) text-encoder files."""
    if clip_type not in CLIP_TYPES:
        raise CheckpointError(f"CLIP type {clip_type!r} is not supported here; expected one of {', '.join(CLIP_TYPES)}")
    device = torch.device(device)
    dtype = _dtypes(precision, device).text
    models: dict[str, torch.nn.Module] = {}
    for path in paths:
        with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
            slot, model = _text_model(file, dtype, device)
        if slot in models:
            raise CheckpointError(f"{Path(path).name}: a second {slot} text encoder; give one of each")
        models[slot] = model
    slots = set(models)
    if clip_type == "sdxl":
        if slots != {"clip_l", "clip_g"}:
            raise CheckpointError(f"sdxl needs a CLIP-L (768) and a bigG (1280) text encoder, got {sorted(slots)}")
        return ClipTextEncoder("sdxl", models["clip_l"], models["clip_g"])
    (slot,) = slots
    kind = {"clip_l": "sd1", "clip_h": "sd2", "clip_g": "sdxl_refiner"}[slot]
    if slot == "clip_g":
        return ClipTextEncoder(kind, None, models["clip_g"])  # type: ignore[arg-type]
    return ClipTextEncoder(kind, models[slot], None)  # type: ignore[arg-type]


def _arch(unet_config: Mapping[str, Any]) -> str:
    context = unet_config.get("cross_attention_dim")
    if unet_config.get("addition_embed_type") == "text_time":
        return "sdxl_refiner" if context == 1280 else "sdxl"
    return "sd2" if context == 1024 else "sd1"


def _prediction(folder: Path) -> str:
    for name in ("scheduler/scheduler_config.json",):
        config = folder / name
        if config.is_file():
            kind = json.loads(config.read_text()).get("prediction_type", "epsilon")
            return "v" if kind == "v_prediction" else "eps"
    return "eps"


def load_diffusers_folder(folder: str | os.PathLike[str], *, precision: str | Precision = "auto",
                          device: torch.device | str = "cpu",
                          parts: Iterable[str] = ("unet", "clip", "vae")) -> tuple[Any, Any, Any]:
    """``(MODEL, CLIP, VAE)`` from a diffusers folder (SD1/SD2/SDXL), read from local files only."""
    folder, device = Path(folder), torch.device(device)
    if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
        raise CheckpointError(f"{folder.name}: not a diffusers folder (no model_index.json and unet/)")
    dtypes, wanted = _dtypes(precision, device), set(parts)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        unet_module = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtypes.unet,
                                                           local_files_only=True)
        arch = _arch(unet_module.config)
        unet = clip = vae = None
        if "unet" in wanted:
            unet_module.eval().requires_grad_(False)
            unet = UNetModel(model=unet_module.to(device), arch=arch, prediction=_prediction(folder),  # type: ignore[arg-type]
                             latent_scale=LATENT_SCALE[arch], device=device, dtype=dtypes.unet,
                             in_channels=unet_module.config.in_channels,
                             context_dim=unet_module.config.cross_attention_dim,
                             adm_channels=unet_module.config.projection_class_embeddings_input_dim)
        if "clip" in wanted:
            clip = _diffusers_clip(folder, arch, dtypes.text, device)
        if "vae" in wanted:
            vae_module = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtypes.vae, local_files_only=True)
            vae = VAEModel(vae_module.eval().requires_grad_(False).to(device), LATENT_SCALE[arch], device, dtypes.vae)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder.name}: cannot load the diffusers folder ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return unet, clip, vae


def _diffusers_clip(folder: Path, arch: str, dtype: torch.dtype, device: torch.device) -> ClipTextEncoder:
    def load(sub: str, projection: bool) -> torch.nn.Module:
        cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        return cls.from_pretrained(folder / sub, torch_dtype=dtype, local_files_only=True).eval().to(device)

    if arch == "sdxl":
        return ClipTextEncoder("sdxl", load("text_encoder", False), load("text_encoder_2", True))
    if arch == "sdxl_refiner":
        return ClipTextEncoder("sdxl_refiner", None, load("text_encoder_2", True))
    return ClipTextEncoder(arch, load("text_encoder", False), None)  # type: ignore[arg-type]
