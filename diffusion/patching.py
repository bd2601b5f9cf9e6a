"""Patchable models: shared base weights plus an ordered list of patches.

A MODEL or CLIP value (``diffusion.models.UNetModel``, ``diffusion.text.ClipTextEncoder``)
holds a base torch module that every clone shares, and a :data:`WeightPatches` mapping:
parameter name -> the ordered :class:`PatchEntry` tuple that changes it. LoRAs and their
kin, merges and hooks are weight patches; call-time behaviour (CFG functions, attention
and block wrappers) lives in the model's ``options`` dict, shaped like ComfyUI's
``model_options`` so that custom-node packs find the keys they know.

Weight patches are applied when the model is used (:func:`patched_weights`), in place on
the shared module: each patched parameter is recomputed from its original value, so a
patch set that is removed or changed gives back exactly what it would have given alone.
The module remembers which patch set it holds; using the same set again costs nothing, a
different set re-computes only the keys whose entries changed, and keys no longer patched
are restored. Originals come from :func:`set_original_source` where a loader can re-read
them (no copy kept), else from a copy taken the first time a key is patched.

Patch entries compare by the identity of their adapter (adapters hold tensors) and by
value for their strengths, so an unchanged LoRA node (cached, same adapter object) keeps
the applied weights, and a strength change re-computes only its keys.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class WeightAdapter(Protocol):
    """One file's change to one weight (a LoRA's up/down pair, a LoHa's factors, a full diff, ...)."""

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The weight after this change at ``strength``, from ``weight`` (float32; may be updated in place)."""
        ...


@dataclass(frozen=True, eq=False)
class DiffAdapter:
    """``W + strength * diff`` (full-weight differences, ComfyUI's one-tensor "diff" patch)."""

    diff: torch.Tensor

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """Add ``strength * diff`` (reshaped to the weight when only the element count agrees)."""
        diff = self.diff.to(weight.device, torch.float32)
        if diff.shape != weight.shape:
            if diff.numel() != weight.numel():
                raise ValueError(f"a diff of shape {tuple(diff.shape)} does not fit a weight of {tuple(weight.shape)}")
            diff = diff.reshape(weight.shape)
        return weight.add_(diff, alpha=strength)


@dataclass(frozen=True, eq=False)
class SetAdapter:
    """Replace the weight (``strength`` is ignored, as for ComfyUI's "set" patch)."""

    value: torch.Tensor

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """The stored value, in the weight's shape."""
        return self.value.to(weight.device, torch.float32).reshape(weight.shape).clone()


@dataclass(frozen=True)
class PatchEntry:
    """One adapter on one key: ``W = adapter.apply(W * strength_model, strength)``.

    ``strength_model`` scales the weight before this patch (merges use it: ``ModelMergeSimple``
    keeps ``ratio`` of the first model). ``offset`` = ``(dim, start, length)`` patches a slice
    of the weight only (fused qkv weights); ``function`` post-processes the patched slice.
    """

    adapter: WeightAdapter = field(compare=False)
    strength: float = 1.0
    strength_model: float = 1.0
    offset: tuple[int, int, int] | None = None
    function: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PatchEntry):
            return NotImplemented
        return (self.adapter is other.adapter and self.function is other.function
                and (self.strength, self.strength_model, self.offset)
                == (other.strength, other.strength_model, other.offset))

    def __hash__(self) -> int:
        return hash((id(self.adapter), self.strength, self.strength_model, self.offset))


#: Parameter (or buffer) name in the base module -> the patches on it, in the order they apply.
WeightPatches = Mapping[str, tuple[PatchEntry, ...]]


def add_patches(patches: WeightPatches, new: Mapping[str, WeightAdapter], strength: float = 1.0,
                strength_model: float = 1.0) -> dict[str, tuple[PatchEntry, ...]]:
    """A new mapping with ``new``'s adapters appended on their keys (``patches`` is not changed)."""
    out = dict(patches)
    for key, adapter in new.items():
        out[key] = (*out.get(key, ()), PatchEntry(adapter, strength, strength_model))
    return out


def _low_rank(entry: PatchEntry, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(up * strength * scale, down)`` as float32 matrices when ``entry`` is a plain low-rank change of ``target``."""
    factors = getattr(entry.adapter, "low_rank", None)
    found = factors() if factors is not None else None
    if found is None or entry.function is not None:
        return None
    up, down, scale = found
    if up.shape[0] != target.shape[0] or up.shape[0] * down.shape[1] != target.numel():
        return None
    return up.to(target.device) * (entry.strength * scale), down.to(target.device)


def _add_low_rank(target: torch.Tensor, ups: list[torch.Tensor], downs: list[torch.Tensor]) -> None:
    """``target += [up_1 | up_2 ...] @ [down_1; down_2 ...]``: one matrix product written into ``target``."""
    up = ups[0] if len(ups) == 1 else torch.cat(ups, dim=1)
    down = downs[0] if len(downs) == 1 else torch.cat(downs, dim=0)
    if target.is_contiguous():
        target.view(target.shape[0], -1).addmm_(up, down)
    else:  # a slice across columns: no 2-D view of it
        target.add_((up @ down).reshape(target.shape))


def calculate_weight(original: torch.Tensor, entries: tuple[PatchEntry, ...],
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """The float32 weight that ``entries`` make of ``original`` (which is not changed).

    With ``out`` (a float32 tensor of the same shape, not ``original`` itself), the weight is
    computed in it and it is returned: no temporary of the weight's size. Runs of plain
    low-rank entries (LoRA / LoCon without DoRA, no ``strength_model`` or post-function) on the
    same slice are added as one matrix product ``[s_1 a_1 up_1 | ...] @ [down_1; ...]``. The
    result depends only on ``original`` and ``entries``, never on what was applied before.
    """
    if out is not None and out.dtype == torch.float32 and out.shape == original.shape:
        weight = out.copy_(original)
    else:
        weight = original.to(torch.float32, copy=True)
    index = 0
    while index < len(entries):
        entry = entries[index]
        if entry.strength_model != 1.0:
            weight.mul_(entry.strength_model)
        if entry.offset is None:
            target = weight
        else:
            dim, start, length = entry.offset
            target = weight.narrow(dim, start, length)
        index += 1
        factors = _low_rank(entry, target)
        if factors is not None:
            ups, downs = [factors[0]], [factors[1]]
            while index < len(entries) and entries[index].strength_model == 1.0 \
                    and entries[index].offset == entry.offset:
                more = _low_rank(entries[index], target)
                if more is None:
                    break
                ups.append(more[0])
                downs.append(more[1])
                index += 1
            _add_low_rank(target, ups, downs)
            continue
        result = entry.adapter.apply(target, entry.strength)
        if entry.function is not None:
            result = entry.function(result)
        if result is not target:
            target.copy_(result)
    return weight


# -- applying weight patches to a shared module ------------------------------------------------------

#: ``source(name)`` -> the original value of parameter ``name`` of a module, re-read (e.g. from its file),
#: or None for a name it cannot re-read (a copy is kept for that one). The value may be in a narrower
#: dtype that the parameter's widens exactly (a float16 file view for a float32 weight: no copy).
OriginalSource = Callable[[str], torch.Tensor | None]


class _WeightState:
    """What a base module holds: the patch entries applied per key, and the originals of patched keys."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.applied: dict[str, tuple[PatchEntry, ...]] = {}
        self.originals: dict[str, torch.Tensor] = {}
        self.source: OriginalSource | None = None


#: The entries a key is marked with while its weight is being computed (equal to no real entries).
_PENDING = (PatchEntry(DiffAdapter(torch.zeros(0)), float("nan")),)

_STATES: weakref.WeakKeyDictionary[nn.Module, _WeightState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _state(module: nn.Module) -> _WeightState:
    with _STATES_LOCK:
        state = _STATES.get(module)
        if state is None:
            state = _STATES[module] = _WeightState()
        return state


def set_original_source(module: nn.Module, source: OriginalSource | None) -> None:
    """Let :func:`patched_weights` re-read originals of ``module`` through ``source`` instead of copying them."""
    _state(module).source = source


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    found = dict(module.named_parameters())
    found.update(module.named_buffers())
    return found


def _original(state: _WeightState, key: str, tensor: torch.Tensor) -> torch.Tensor:
    saved = state.originals.get(key)
    if saved is not None:
        return saved
    if state.source is not None:
        value = state.source(key)
        if value is not None:
            return value
    return tensor.detach().clone()


def original_weight(module: nn.Module, key: str) -> torch.Tensor:
    """The unpatched value of ``module``'s parameter ``key``, whatever patch set it holds now."""
    state = _state(module)
    with state.lock:
        tensor = _tensors(module)[key]
        if key not in state.applied:
            return tensor.detach()
        return _original(state, key, tensor).to(tensor.dtype)


def apply_weight_patches(module: nn.Module, patches: WeightPatches) -> None:
    """Make ``module``'s weights those of ``patches`` (keys no longer patched get their originals back).

    Unknown keys raise ``KeyError`` naming them; a key's weights are recomputed only when its
    entries differ from what the module holds.
    """
    state = _state(module)
    with state.lock, torch.no_grad():
        tensors = _tensors(module)
        unknown = [k for k in patches if k not in tensors]
        if unknown:
            raise KeyError(f"patches name weights the model does not have: {', '.join(sorted(unknown)[:5])}")
        changed = [k for k, entries in state.applied.items() if patches.get(k) != entries]
        for key in changed:
            if not patches.get(key):
                tensors[key].copy_(_original(state, key, tensors[key]))
                state.applied.pop(key)
                state.originals.pop(key, None)
        try:
            for key, entries in patches.items():
                if not entries or state.applied.get(key) == entries:
                    continue
                tensor = tensors[key]
                original = state.originals.get(key)
                if original is None:
                    original = state.source(key) if state.source is not None else None
                    if original is None:  # no source, or one that does not know this key: keep a copy
                        original = state.originals[key] = tensor.detach().clone()
                # Keys whose entries changed are recomputed straight from the original (not restored first),
                # into the parameter itself when it is float32. Meanwhile the key counts as patched (by
                # entries nothing equals), so original_weight() still gives its original and a failure restores it.
                state.applied[key] = _PENDING
                result = calculate_weight(original, entries, out=tensor)
                if result is not tensor:
                    tensor.copy_(result)
                state.applied[key] = entries
        except BaseException:
            restore_weights(module)  # a patch that fails leaves the module unpatched, never half-way
            raise


def restore_weights(module: nn.Module) -> None:
    """Put every patched weight of ``module`` back to its original (``/free``, or before saving a base)."""
    apply_weight_patches(module, {})


@contextmanager
def patched_weights(module: nn.Module, patches: WeightPatches) -> Iterator[nn.Module]:
    """Use ``module`` with ``patches`` applied; holds the module's lock, so no other patch set swaps in meanwhile.

    The weights stay applied afterwards (a second use with the same patches costs nothing);
    the next use with other patches replaces them.
    """
    state = _state(module)
    with state.lock:
        apply_weight_patches(module, patches)
        yield module


def applied_patches(module: nn.Module) -> dict[str, tuple[PatchEntry, ...]]:
    """The patch entries ``module`` holds now, per key (for tests and memory accounting)."""
    return dict(_state(module).applied)


# -- call-time options (ComfyUI's model_options) ------------------------------------------------------


def clone_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a ``model_options`` dict whose nested dicts and lists can be changed without touching ``options``.

    Values (functions, tensors) are shared; the containers of ``transformer_options`` down to
    the patch lists are copied, as ComfyUI's ``ModelPatcher.clone`` does.
    """
    def copy(value: Any, depth: int) -> Any:
        if depth > 4:
            return value
        if isinstance(value, dict):
            return {k: copy(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [copy(v, depth + 1) for v in value]
        return value

    return copy(dict(options), 0)


def set_model_option(options: dict[str, Any], key: str, value: Any) -> None:
    """Set a top-level option (``"sampler_cfg_function"``, ``"model_function_wrapper"``, ...)."""
    options[key] = value


def append_model_option(options: dict[str, Any], key: str, value: Any) -> None:
    """Append to a list option (``"sampler_post_cfg_function"``, ``"sampler_pre_cfg_function"``)."""
    options.setdefault(key, []).append(value)


def add_model_patch(options: dict[str, Any], name: str, patch: Any) -> None:
    """Append a block or attention patch: ``transformer_options["patches"][name]`` (``"attn1_patch"``, ...)."""
    transformer = options.setdefault("transformer_options", {})
    transformer.setdefault("patches", {}).setdefault(name, []).append(patch)


def set_model_patch_replace(options: dict[str, Any], patch: Any, name: str, block_name: str, number: int,
                            transformer_index: int | None = None) -> None:
    """Replace an attention call: ``transformer_options["patches_replace"][name][(block, number[, index])]``."""
    transformer = options.setdefault("transformer_options", {})
    slot = transformer.setdefault("patches_replace", {}).setdefault(name, {})
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    slot[key] = patch
