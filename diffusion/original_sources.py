"""Re-reading a loaded model's original weights from its checkpoint file, so patching keeps no copies.

``diffusion.patching`` recomputes a patched weight from its original each time the patch
set changes; by default it keeps a copy of every original it patched, which for a LoRA on
every attention layer is a good part of the model again. :func:`attach_file_sources`
gives the UNet and the text encoders of a loaded checkpoint a source that reads one
original tensor back from the file instead (through the same name maps the loader used,
cast to the module's dtype), so five stacked LoRAs cost little more memory than none.
Keys the map does not know fall back to the copy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from diffusion.checkpoint import SAFETENSORS_SUFFIXES, TensorFile
from diffusion.convert import _OPENCLIP_LAYER, unet_ldm_names
from diffusion.detect import TEXT_LAYOUTS, UNET_PREFIX
from diffusion.models import LoadedCheckpoint
from diffusion.patching import set_original_source

#: File dtypes whose values a float32 parameter holds exactly (a source returns them uncast).
_EXACT = (torch.float16, torch.bfloat16)

#: ``our parameter name -> (key in the file, how to cut the file's tensor into ours)``.
NameMap = dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]]


class FileSource:
    """``source(name)``: one original parameter of ``module``, read back from an open checkpoint file.

    The file stays open from the moment the source is made, so a checkpoint replaced on disk
    later (a new file under the old name) does not change what is read.
    """

    def __init__(self, file: TensorFile, lock: threading.Lock, module: nn.Module, names: NameMap) -> None:
        self.file, self.lock, self.names = file, lock, names
        self._params = {k: (v.dtype, v.shape, v.device) for k, v in module.named_parameters()}

    def __call__(self, name: str) -> torch.Tensor | None:
        """The original value of parameter ``name`` (None when the map does not know it).

        In the parameter's dtype, or, for a float32 parameter, the file's float16 / bfloat16
        view as it is (the values are the same; the reader widens them, no copy here).
        """
        found = self.names.get(name)
        if found is None or name not in self._params or found[0] not in self.file.shapes:
            return None
        key, cut = found
        dtype, shape, device = self._params[name]
        with self.lock:
            tensor = self.file.get(key)
        if cut is not None:
            tensor = cut(tensor)
        if tensor.numel() != shape.numel():
            return None
        tensor = tensor.reshape(shape)
        if device == tensor.device and (tensor.dtype == dtype or (dtype == torch.float32 and tensor.dtype in _EXACT)):
            return tensor  # the file's own view (no copy); widening to float32 is exact, done by the reader
        return tensor.to(device=device, dtype=dtype)


def unet_names(module: nn.Module) -> NameMap:
    """Diffusers UNet parameter names -> their LDM keys in a single-file checkpoint."""
    names = [n for n, _ in module.named_parameters()]
    return {n: (UNET_PREFIX + ldm, None) for n, ldm in unet_ldm_names(names, module.config).items()}  # type: ignore[attr-defined]


def hf_clip_names(module: nn.Module, prefix: str) -> NameMap:
    """transformers CLIP parameter names -> keys under ``prefix`` in the transformers layout."""
    out: NameMap = {}
    for name, _ in module.named_parameters():
        full = name if name.startswith(("text_model.", "text_projection")) else "text_model." + name
        out[name] = (prefix + full, None)
    return out


def _rows(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def cut(fused: torch.Tensor) -> torch.Tensor:
        size = fused.shape[0] // 3
        return fused[index * size:(index + 1) * size]

    return cut


def _transpose(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.T


def openclip_names(module: nn.Module, prefix: str) -> NameMap:
    """transformers names of an OpenCLIP text model -> OpenCLIP keys (q/k/v are thirds of ``in_proj``)."""
    fixed = {"embeddings.token_embedding.weight": ("token_embedding.weight", None),
             "embeddings.position_embedding.weight": ("positional_embedding", None),
             "final_layer_norm.weight": ("ln_final.weight", None), "final_layer_norm.bias": ("ln_final.bias", None),
             "text_projection.weight": ("text_projection", _transpose)}
    out: NameMap = {}
    for name, _ in module.named_parameters():
        flat = name.removeprefix("text_model.")
        if flat in fixed:
            key, cut = fixed[flat]
            out[name] = (prefix + key, cut)
            continue
        match = re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)$", flat)
        if match is None:
            continue
        block, layer, kind = f"transformer.resblocks.{match[1]}", match[2], match[3]
        qkv = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
        if layer in qkv:
            out[name] = (f"{prefix}{block}.attn.in_proj_{kind}", _rows(qkv[layer]))
        elif layer == "self_attn.out_proj":
            out[name] = (f"{prefix}{block}.attn.out_proj.{kind}", None)
        elif layer in _OPENCLIP_LAYER:
            out[name] = (f"{prefix}{block}.{_OPENCLIP_LAYER[layer]}.{kind}", None)
    return out


def attach_file_sources(loaded: LoadedCheckpoint) -> bool:
    """Let patching re-read the originals of ``loaded``'s UNet and text encoders from its file.

    Only for ``.safetensors`` files (a pickle would be read whole into memory); returns
    whether sources were attached.
    """
    path = Path(loaded.path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES or not path.is_file():
        return False
    if loaded.arch not in TEXT_LAYOUTS:  # SD3/Flux (diffusion.families): their patches keep originals in memory
        return False
    file, lock = TensorFile(path), threading.Lock()
    if loaded.unet is not None:
        module = loaded.unet.model
        set_original_source(module, FileSource(file, lock, module, unet_names(module)))
    layouts = TEXT_LAYOUTS.get(loaded.arch, {})
    for slot in ("clip_l", "clip_g"):
        module = getattr(loaded.clip, slot, None) if loaded.clip is not None else None
        name = "clip_h" if slot == "clip_l" and "clip_h" in layouts else slot
        if module is None or name not in layouts:
            continue
        prefix, layout = layouts[name]
        names = hf_clip_names(module, prefix) if layout == "hf" else openclip_names(module, prefix)
        set_original_source(module, FileSource(file, lock, module, names))
    return True
