"""The module names LoRA files use -> the parameter names of our UNet and text encoders.

A LoRA file names the layer it changes by a *stem* (``lora_unet_input_blocks_1_1_proj_in``,
``unet.down_blocks.0.attentions.0.proj_in``, ``lora_te1_text_model_encoder_layers_0_mlp_fc1``
...) followed by the part (``.lora_up.weight``, ``.alpha``...). :func:`unet_stems` and
:func:`clip_stems` list every stem spelling of every module of a loaded model, mapped to
``(target, module path)``: the target is ``"unet"`` or a CLIP slot (``"clip_l"``,
``"clip_g"``), and ``module path + ".weight"`` (or ``".bias"``) is the parameter the patch
goes on. The LDM names come from :func:`diffusion.convert.unet_ldm_names` (the inverse of the
converter the checkpoint loader used), so no second LDM table is kept here.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable

from torch import nn

from diffusion.convert import unet_ldm_names

#: ``stem -> (target, module path in that target)``.
StemMap = dict[str, tuple[str, str]]

#: Per text-encoder family and slot: (kohya prefixes, diffusers prefixes, ComfyUI ``text_encoders.`` names).
_CLIP_PREFIXES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]] = {
    "sd1": {"clip_l": (("lora_te",), ("text_encoder",), ("clip_l",))},
    "sd2": {"clip_l": (("lora_te",), ("text_encoder",), ("clip_h",))},
    "sdxl": {"clip_l": (("lora_te1",), ("text_encoder",), ("clip_l",)),
             "clip_g": (("lora_te2",), ("text_encoder_2",), ("clip_g",))},
    "sdxl_refiner": {"clip_g": (("lora_te2", "lora_te"), ("text_encoder_2", "text_encoder"), ("clip_g",))},
    # sd-scripts: lora_te1 CLIP-L, lora_te2 CLIP-G, lora_te3 T5 (Flux: te1 and te3; some forks wrote te2 for T5)
    "sd3": {"clip_l": (("lora_te1",), ("text_encoder",), ("clip_l",)),
            "clip_g": (("lora_te2",), ("text_encoder_2",), ("clip_g",)),
            "t5": (("lora_te3",), ("text_encoder_3",), ("t5xxl",))},
    "flux": {"clip_l": (("lora_te1",), ("text_encoder",), ("clip_l",)),
             "t5": (("lora_te3", "lora_te2"), ("text_encoder_2",), ("t5xxl",))},
}

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[str, StemMap]] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _module_paths(module: nn.Module) -> list[str]:
    """Paths of the modules that own a ``weight`` or ``bias`` directly."""
    names = {n.rpartition(".")[0] for n, _ in module.named_parameters() if n.endswith((".weight", ".bias"))}
    return sorted(names)


def _cached(module: nn.Module, tag: str, build: Callable[[], StemMap]) -> StemMap:
    """The stem map ``build()`` makes for ``module``, built once per module (maps only depend on its names)."""
    with _CACHE_LOCK:
        per_module = _CACHE.setdefault(module, {})
        if tag not in per_module:
            per_module[tag] = build()
        return per_module[tag]


def unet_stems(unet: nn.Module) -> StemMap:
    """Every stem a LoRA file may use for a module of ``unet`` (a diffusers ``UNet2DConditionModel``).

    Spellings: kohya on LDM names (``lora_unet_input_blocks_1_1_proj_in``), kohya on diffusers
    names (``lora_unet_down_blocks_0_attentions_0_proj_in``), diffusers / PEFT
    (``unet.down_blocks...``, ``base_model.model.down_blocks...``, bare ``down_blocks...``,
    ``transformer.down_blocks...``) and ComfyUI's own (``diffusion_model.input_blocks.1.1.proj_in``).
    """
    def build() -> StemMap:
        params = dict(unet.named_parameters())
        weight_names = {p: p + ".weight" if p + ".weight" in params else p + ".bias" for p in _module_paths(unet)}
        ldm = unet_ldm_names(weight_names.values(), unet.config)
        out: StemMap = {}
        for path, name in weight_names.items():
            ldm_path = ldm[name].rpartition(".")[0]
            target = ("unet", path)
            for stem in (f"lora_unet_{ldm_path.replace('.', '_')}", f"lora_unet_{path.replace('.', '_')}",
                         f"diffusion_model.{ldm_path}", f"model.diffusion_model.{ldm_path}",
                         f"unet.{path}", f"base_model.model.{path}", f"transformer.{path}", path):
                out.setdefault(stem, target)
        return out

    return _cached(unet, "unet", build)


def _hf_path(path: str, slot: str = "clip_l") -> str:
    """A transformers CLIP module path with the ``text_model.`` prefix (``text_projection`` and T5 have none)."""
    if slot == "t5" or path.startswith(("text_model.", "text_projection")):
        return path
    return "text_model." + path


def clip_stems(kind: str, slot: str, model: nn.Module) -> StemMap:
    """Every stem a LoRA file may use for a module of the text model in ``slot`` of a ``kind`` CLIP.

    Spellings: kohya (``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` + the transformers name with
    ``_``), diffusers (``text_encoder.`` / ``text_encoder_2.`` + the name) and ComfyUI's
    (``text_encoders.clip_l.transformer.`` + the name).
    """
    kohya, diffusers, comfy = _CLIP_PREFIXES.get(kind, {}).get(slot, ((), (), ()))

    def build() -> StemMap:
        out: StemMap = {}
        for path in _module_paths(model):
            hf = _hf_path(path, slot)
            target = (slot, path)
            stems: Iterable[str] = (
                *(f"{p}_{hf.replace('.', '_')}" for p in kohya),
                *(f"{p}.{hf}" for p in diffusers),
                *(f"text_encoders.{c}.transformer.{hf}" for c in comfy),
            )
            for stem in stems:
                out.setdefault(stem, target)
        return out

    return _cached(model, f"clip:{kind}:{slot}", build)


def is_text_encoder_stem(stem: str) -> bool:
    """True for a stem that names a text-encoder module in any spelling (model-only loaders skip them)."""
    return stem.startswith(("lora_te", "text_encoder", "text_encoders.", "lora_prior_te"))
