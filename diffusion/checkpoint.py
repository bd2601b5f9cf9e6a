"""Load single-file Stable Diffusion checkpoints (and separate VAE files) offline.

Reading is lazy: a ``.safetensors`` header is parsed (and checked against the file's
length) without touching the data. A tensor kept in the file's dtype is a view of a private
memory map of the file (pages shared with the page cache until written, as an in-place
LoRA patch does); unaligned ones, and files that cannot be mapped, are read with a
positioned read into a fresh buffer instead. A tensor that changes dtype is read in 8 MB
pieces through one reused buffer and cast into its own storage (the one copy): mapped pages
would stay resident until the file closes, the file's size again on top of the cast model.
Models are built on the meta device and adopt the tensors (``assign=True``), so no second
copy of the weights exists beside the model.
``.ckpt``/``.pt``/``.pth``/``.bin`` files go through ``torch.load(weights_only=True)`` (no
code in a pickle is ever run); anything else is refused. Every problem with a file is a
:class:`CheckpointError` with a one-line reason.

The prediction type (eps or v) is not in the weights. In order, the first that applies:
the caller's choice; a ``v_pred`` key in the file (ComfyUI's SDXL marker); the safetensors
metadata ``modelspec.prediction_type`` (``v``/``v_prediction`` or ``epsilon``/``eps``, which
our synthetic files write); for SD2.x non-inpainting models ComfyUI's own test (std of
``output_blocks.11.1.transformer_blocks.0.norm1.bias`` above 0.09 means v); else eps.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.utils import logging as hf_logging

from diffusion import convert, x4_upscaler
from diffusion.detect import UNET_PREFIX, CheckpointLayout, DetectionError, derive_vae_config, detect, find_vae_prefix
from diffusion.models import (
    LATENT_SCALE,
    LoadedCheckpoint,
    Prediction,
    UNetModel,
    VAEModel,
)
from diffusion.precision import Precision, dtype_name, place_model, resolve_precision
from diffusion.preview import remember_vae
from diffusion.text import ClipTextEncoder

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_SCRATCH_BYTES = 8 << 20  # the read buffer of tensors that are cast while loading
V_PRED_STD_KEY = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"


class CheckpointError(Exception):
    """A file that cannot be loaded as a model; the message is one line a user can act on."""


def load_pickle(path: Path) -> Any:
    """A pickled checkpoint's contents through ``torch.load(weights_only=True)``; one-line :class:`CheckpointError`."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the verdict is ours
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        reason = "the pickle holds more than tensors (code or objects); refused for safety"
        raise CheckpointError(f"{path.name}: {reason}") from None
    except Exception as exc:  # torch raises many kinds for corrupt archives
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path.name}: not a readable checkpoint ({reason})") from None


class TensorFile:
    """A checkpoint's tensors, readable one at a time; names, shapes and dtypes without reading data."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stack = ExitStack()
        self._loaded: dict[str, torch.Tensor] | None = None
        self._scratch: torch.Tensor | None = None
        name = self.path.name
        suffix = self.path.suffix.lower()
        if not self.path.is_file():
            raise CheckpointError(f"{name}: no such file")
        if suffix in SAFETENSORS_SUFFIXES:
            self._open_safetensors()
        elif suffix in PICKLE_SUFFIXES:
            self._open_pickle()
        else:
            raise CheckpointError(f"{name}: unsupported file type {suffix or '(none)'!r}; use .safetensors or .ckpt")
        if not self.shapes:
            raise CheckpointError(f"{name}: the file holds no tensors")

    def _open_safetensors(self) -> None:
        header = self._read_safetensors_header()
        self.metadata: dict[str, str] = dict(header.pop("__metadata__", None) or {})
        self.shapes: dict[str, tuple[int, ...]] = {k: tuple(v["shape"]) for k, v in header.items()}
        self.dtypes: dict[str, str] = {k: v["dtype"] for k, v in header.items()}
        self._offsets = {k: tuple(v["data_offsets"]) for k, v in header.items()}
        unknown = sorted({d for d in self.dtypes.values() if d not in _SAFETENSORS_DTYPES})
        if unknown:
            raise CheckpointError(f"{self.path.name}: unsupported tensor dtype {unknown[0]}")
        self._handle = self._stack.enter_context(self.path.open("rb"))
        try:  # a private map: tensors share the page cache's pages (no copy) until something writes to them
            self._map: mmap.mmap | None = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            self._map = None

    def _read_safetensors_header(self) -> dict[str, Any]:
        """The JSON header, checked for shape and against the file's length (so a cut-off file is caught up front)."""
        name, size = self.path.name, self.path.stat().st_size
        with self.path.open("rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length <= 1 or 8 + length > size or length > 100_000_000:
                raise CheckpointError(f"{name}: not a safetensors file (no valid header)")
            try:
                header = json.loads(fh.read(length))
                ends = [0]
                for key, entry in header.items():
                    if key != "__metadata__":
                        entry["shape"] = [int(n) for n in entry["shape"]]
                        entry["dtype"] = str(entry["dtype"])
                        ends.append(int(entry["data_offsets"][1]))
            except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                raise CheckpointError(f"{name}: not a safetensors file (unreadable header)") from None
        self._data_start = 8 + length
        expected = 8 + length + max(ends)
        if size < expected:
            raise CheckpointError(f"{name}: truncated ({size} of {expected} bytes); download or copy it again")
        return header

    def _open_pickle(self) -> None:
        data = load_pickle(self.path)
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.path.name}: the pickle does not hold a state dict")
        self._loaded = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        self.metadata = {}
        self.shapes = {k: tuple(v.shape) for k, v in self._loaded.items()}
        self.dtypes = {k: dtype_name(v.dtype).upper() for k, v in self._loaded.items()}

    def get(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, cast to ``dtype`` if it is a floating-point tensor."""
        if self._loaded is None:
            stored = _SAFETENSORS_DTYPES[self.dtypes[key]]
            if dtype is not None and stored.is_floating_point and stored != dtype:
                return self._read_cast(key, dtype)
            return self._read_safetensor(key)
        tensor = self._loaded[key]
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        return tensor

    def _read_cast(self, key: str, dtype: torch.dtype) -> torch.Tensor:
        """A tensor that changes dtype, read in pieces through one small reused buffer and cast into its
        own storage. Mapped pages would stay in the process's resident set until the file is closed: the
        file's size again on top of the cast model (2 GB more for a fp16 SD1.5 file loaded in fp32)."""
        start, end = self._offsets[key]
        stored = _SAFETENSORS_DTYPES[self.dtypes[key]]
        out = torch.empty(self.shapes[key], dtype=dtype)
        flat = out.view(-1)
        if end - start != flat.numel() * stored.itemsize:
            raise CheckpointError(f"{self.path.name}: {key!r} holds {end - start} bytes, not its shape's")
        if self._scratch is None:
            self._scratch = torch.empty(_SCRATCH_BYTES, dtype=torch.uint8)
        step = _SCRATCH_BYTES // stored.itemsize
        self._handle.seek(self._data_start + start)
        for first in range(0, flat.numel(), step):
            count = min(step, flat.numel() - first)
            piece = self._scratch[: count * stored.itemsize]
            self._read_next(piece, key)
            flat[first : first + count].copy_(piece.view(stored))
        return out

    def _read_safetensor(self, key: str) -> torch.Tensor:
        """One tensor: a view of the file's memory map when it is aligned for its dtype, else read
        straight into its own buffer (a positioned read, as fast)."""
        start, end = self._offsets[key]
        dtype = _SAFETENSORS_DTYPES[self.dtypes[key]]
        offset = self._data_start + start
        if self._map is not None and end > start and offset % dtype.itemsize == 0:
            with warnings.catch_warnings():  # the private map is writable: torch's read-only warning does not apply
                warnings.simplefilter("ignore")
                flat = torch.frombuffer(self._map, dtype=dtype, count=(end - start) // dtype.itemsize, offset=offset)
            return flat.reshape(self.shapes[key])
        buffer = torch.empty(end - start, dtype=torch.uint8)
        self._handle.seek(offset)
        self._read_next(buffer, key)
        return buffer.view(dtype).reshape(self.shapes[key])

    def _read_next(self, buffer: torch.Tensor, key: str) -> None:
        """Fill the uint8 ``buffer`` from the file's current position (part of tensor ``key``), or refuse."""
        if self._handle.readinto(memoryview(buffer.numpy())) != buffer.numel():
            raise CheckpointError(f"{self.path.name}: truncated while reading {key!r}")

    def read(self, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Every tensor whose name starts with ``prefix`` (full names kept), cast to ``dtype``."""
        return {k: self.get(k, dtype) for k in self.shapes if k.startswith(prefix)}

    def close(self) -> None:
        """Release the file (the map itself goes once no tensor that views it is left)."""
        self._stack.close()
        self._loaded = None
        self._map = None
        self._scratch = None

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_prediction(layout: CheckpointLayout, file: TensorFile, choice: str | None = None) -> Prediction:
    """eps or v, by the rules in this module's docstring."""
    if choice in ("eps", "v"):
        return choice  # type: ignore[return-value]
    if choice not in (None, "auto"):
        raise CheckpointError(f"unknown prediction type {choice!r}; expected eps, v or auto")
    if layout.variant == "x4_upscaler":
        return "v"  # as ComfyUI has it, whatever the file says
    if "v_pred" in file.shapes:
        return "v"
    marked = file.metadata.get("modelspec.prediction_type", "").lower()
    if marked in ("v", "v_prediction", "v-prediction"):
        return "v"
    if marked in ("eps", "epsilon"):
        return "eps"
    if layout.arch == "sd2" and not layout.inpaint and V_PRED_STD_KEY in file.shapes:
        bias = file.get(V_PRED_STD_KEY, torch.float32)
        if bias.std(unbiased=False).item() > 0.09:
            return "v"
    return "eps"


def _build(factory: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], what: str, name: str) -> Any:
    """Construct on the meta device, then adopt the tensors as the parameters (no second copy)."""
    with init_empty_weights():
        model = factory()
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise CheckpointError(
            f"{name}: the {what} weights do not fit the derived model "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {example!r})"
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{name}: the {what} weights do not fit ({str(exc).splitlines()[-1].strip()})") from None
    model.eval().requires_grad_(False)
    return model


def _text_model(spec_config: dict[str, Any], with_projection: bool) -> torch.nn.Module:
    config = CLIPTextConfig(**spec_config)
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _load_text(file: TensorFile, layout: CheckpointLayout, dtype: torch.dtype, device: torch.device) -> ClipTextEncoder:
    models: dict[str, torch.nn.Module] = {}
    for spec in layout.text_encoders:
        with_projection = spec.name == "clip_g"
        raw = file.read(spec.prefix, dtype)
        if spec.layout == "hf":
            state = convert.clip_to_transformers(raw, spec.prefix, with_projection)
        else:
            state = convert.openclip_to_transformers(raw, spec.prefix, spec.config["hidden_size"], with_projection)
        del raw
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # transformers warns about meta-device init on every model
        try:
            model = _build(lambda c=spec.config, p=with_projection: _text_model(c, p), state, spec.name, file.path.name)
        finally:
            hf_logging.set_verbosity(verbosity)
        models[spec.name] = model.to(device)
    clip_l = models.get("clip_l", models.get("clip_h"))
    return ClipTextEncoder(layout.arch, clip_l, models.get("clip_g"))  # type: ignore[arg-type]


def _load_vae(file: TensorFile, prefix: str, config: dict[str, Any], scale: float, dtype: torch.dtype,
              device: torch.device) -> VAEModel:
    config = {**config, "scaling_factor": scale}
    state = convert.vae_to_diffusers(file.read(prefix, dtype), config)
    model = _build(lambda: AutoencoderKL(**config), state, "VAE", file.path.name)
    return VAEModel(place_model(model, dtype, device), scale, device, dtype)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    precision: str | Precision = "auto",
    device: torch.device | str = "cpu",
    prediction: str | None = None,
    parts: Iterable[str] = ("unet", "clip", "vae"),
) -> LoadedCheckpoint:
    """Load a single-file checkpoint: UNet (MODEL), text encoders (CLIP) and VAE, as asked in ``parts``.

    ``precision`` is a name from ``diffusion.precision.PRECISIONS`` or a resolved
    :class:`Precision`; ``prediction`` is ``eps``, ``v`` or None/``auto`` (see the module
    docstring). Raises :class:`CheckpointError` for any file that is not a usable model.
    """
    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        from diffusion.families import loader as transformer_loader  # SD3/Flux; it builds on this module

        if transformer_loader.detect_transformer(file.shapes) is not None:
            return transformer_loader.load_open_checkpoint(file, dtypes, device, set(parts))  # type: ignore[return-value]
        return _load_parts(file, dtypes, device, prediction, set(parts))


def _load_parts(
    file: TensorFile, dtypes: Precision, device: torch.device, prediction: str | None, wanted: set[str]
) -> LoadedCheckpoint:
    """Detect, then load the asked-for parts (``unet``, ``clip``, ``vae``) from an open file."""
    name = file.path.name
    try:
        layout = detect(file.shapes)
    except DetectionError as exc:
        raise CheckpointError(f"{name}: {exc}") from None
    pred = resolve_prediction(layout, file, prediction)
    scale = x4_upscaler.LATENT_SCALE if layout.variant == "x4_upscaler" else LATENT_SCALE[layout.arch]
    unet = clip = vae = None
    if "unet" in wanted:
        if layout.unet_config is None:
            raise CheckpointError(f"{name}: the file has no UNet (model.diffusion_model.*)")
        config = layout.unet_config
        state = convert.unet_to_diffusers(file.read(UNET_PREFIX, dtypes.unet), config)
        model = _build(lambda: UNet2DConditionModel(**config), state, "UNet", name)
        del state
        unet = UNetModel(
            model=place_model(model, dtypes.unet, device),
            arch=layout.arch,  # type: ignore[arg-type]
            prediction=pred,
            latent_scale=scale,
            device=device,
            dtype=dtypes.unet,
            in_channels=config["in_channels"],
            context_dim=config["cross_attention_dim"],
            adm_channels=layout.adm_channels,
            schedule=x4_upscaler.schedule(pred) if layout.variant == "x4_upscaler" else None,  # type: ignore[arg-type]
            variant=layout.variant,
            context_projection=_context_projection(file, layout, dtypes.unet, device),
        )
    if "clip" in wanted:
        if not layout.text_encoders:
            raise CheckpointError(f"{name}: the file has no text encoder")
        clip = _load_text(file, layout, dtypes.text, device)
    if "vae" in wanted:
        if layout.vae_config is None or layout.vae_prefix is None:
            raise CheckpointError(f"{name}: the file has no VAE (first_stage_model.*)")
        vae = _load_vae(file, layout.vae_prefix, layout.vae_config, scale, dtypes.vae, device)
    if unet is not None and vae is not None:  # previews take their colours from this VAE
        remember_vae(unet.model, vae, scale)
    info = describe(layout, file, pred)
    return LoadedCheckpoint(str(file.path), layout.arch, pred, unet, clip, vae, info)  # type: ignore[arg-type]


def _context_projection(file: TensorFile, layout: CheckpointLayout, dtype: torch.dtype,
                        device: torch.device) -> torch.nn.Module | None:
    """Stable Zero123's ``cc_projection`` (image embeds + camera -> the UNet's context width), else None."""
    if layout.variant != "zero123":
        return None
    from diffusion.zero123 import projection_from  # it builds on this module

    return projection_from(file.read("cc_projection.", dtype), device)


@contextmanager
def _as_checkpoint_errors(name: str) -> Iterator[None]:
    """Weights that pass detection but still do not convert are the file's fault: one line, no traceback."""
    try:
        yield
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"{name}: cannot load the weights ({type(exc).__name__}: {reason})") from None


def load_vae(
    path: str | os.PathLike[str],
    *,
    precision: str | Precision = "auto",
    device: torch.device | str = "cpu",
    scale_factor: float = LATENT_SCALE["sd1"],
) -> VAEModel:
    """Load a separate VAE file (LDM layout, keys bare or under ``first_stage_model.``/``vae.``).

    The latent scale is not in the file (SD1 and SDXL VAEs have the same shapes); the
    sampler applies the model's own, so ``scale_factor`` is informative only.
    """
    device = torch.device(device)
    dtypes = precision if isinstance(precision, Precision) else resolve_precision(precision, device)
    with TensorFile(path) as file, _as_checkpoint_errors(file.path.name):
        prefix = find_vae_prefix(file.shapes)
        if prefix is None:
            raise CheckpointError(f"{file.path.name}: no VAE keys (encoder.conv_in.weight, decoder.conv_out.weight)")
        try:
            config = derive_vae_config(file.shapes, prefix)
        except DetectionError as exc:
            raise CheckpointError(f"{file.path.name}: {exc}") from None
        return _load_vae(file, prefix, config, scale_factor, dtypes.vae, device)


def describe(layout: CheckpointLayout, file: TensorFile, prediction: Prediction) -> dict[str, Any]:
    """A JSON-ready summary of a checkpoint (what ``noodlebox inspect-checkpoint`` prints)."""
    float_dtypes = [d for d in file.dtypes.values() if d.upper() in ("F32", "F16", "BF16", "FP32", "FP16")]
    dtype = max(set(float_dtypes), key=float_dtypes.count) if float_dtypes else None
    unet: dict[str, Any] | None = None
    if layout.unet_config is not None:
        c = layout.unet_config
        unet = {
            "params": layout.unet_params,
            "in_channels": c["in_channels"],
            "block_out_channels": c["block_out_channels"],
            "layers_per_block": c["layers_per_block"],
            "transformer_depth": [
                d if t.startswith("CrossAttn") else 0
                for d, t in zip(c["transformer_layers_per_block"], c["down_block_types"], strict=True)
            ],
            "attention_heads": c["attention_head_dim"],
            "context_dim": c["cross_attention_dim"],
            "linear_projection": c["use_linear_projection"],
            "adm_channels": layout.adm_channels,
        }
    vae = None
    if layout.vae_config is not None:
        vae = {
            "params": layout.vae_params,
            "block_out_channels": layout.vae_config["block_out_channels"],
            "latent_channels": layout.vae_config["latent_channels"],
            "scale_factor": LATENT_SCALE[layout.arch],
        }
    encoders = [
        {
            "name": spec.name,
            "layout": spec.layout,
            "params": spec.params,
            "hidden_size": spec.config["hidden_size"],
            "layers": spec.config["num_hidden_layers"],
            "heads": spec.config["num_attention_heads"],
        }
        for spec in layout.text_encoders
    ]
    return {
        "file": file.path.name,
        "arch": layout.arch,
        "inpaint": layout.inpaint,
        "prediction": prediction,
        "unet": unet,
        "vae": vae,
        "text_encoders": encoders,
        "dtype": {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "FP32": "fp32", "FP16": "fp16"}.get(str(dtype)),
        "size_bytes": file.path.stat().st_size,
        "metadata": file.metadata,
    }


def inspect_checkpoint(path: str | os.PathLike[str], prediction: str | None = None) -> dict[str, Any]:
    """Describe a checkpoint without loading its weights (shapes only; one small tensor for SD2's v test)."""
    with TensorFile(path) as file:
        try:
            layout = detect(file.shapes)
        except DetectionError as exc:
            raise CheckpointError(f"{file.path.name}: {exc}") from None
        return describe(layout, file, resolve_prediction(layout, file, prediction))


__all__ = [
    "CheckpointError",
    "TensorFile",
    "describe",
    "inspect_checkpoint",
    "load_checkpoint",
    "load_vae",
    "resolve_prediction",
]
