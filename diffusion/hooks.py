"""Weight hooks: LoRAs (or a whole model, as a LoRA) that apply only to the conditioning they are attached to.

ComfyUI's hooks family. A :class:`WeightHook` holds a parsed LoRA file (placed on the model
when it samples) or another model's weights, its model and CLIP strengths, and keyframes
that scale its strength over the sampling run. A :class:`HookGroup` is an ordered tuple of
hooks; a conditioning entry carries one under ``"hooks"``. While sampling, the denoiser runs
each entry with the model's own weight patches plus its hooks' patches at the strength of
the keyframe in force, so two prompts with different LoRAs share one sampling run.
Everything here is immutable: nodes make new values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from diffusion.merge import OtherWeight
from diffusion.patching import PatchEntry, WeightAdapter, WeightPatches


@dataclass(frozen=True)
class HookKeyframe:
    """From ``start_percent`` of the run on, the hook's strengths are multiplied by ``strength``."""

    strength: float = 1.0
    start_percent: float = 0.0
    guarantee_steps: int = 1


#: Keyframes in order of their start; empty means strength 1 throughout.
HookKeyframes = tuple[HookKeyframe, ...]


def add_keyframe(keyframes: HookKeyframes, keyframe: HookKeyframe) -> HookKeyframes:
    """``keyframes`` with ``keyframe`` added in start order (a later one at the same start comes after)."""
    return tuple(sorted((*keyframes, keyframe), key=lambda k: k.start_percent))


def keyframe_strength(keyframes: HookKeyframes, percent: float) -> float:
    """The strength multiplier at ``percent`` of the run (the last keyframe started by then; 1 before any)."""
    strength = 1.0
    for keyframe in keyframes:
        if keyframe.start_percent <= percent + 1e-9:
            strength = keyframe.strength
    return strength


#: Interpolations of CreateHookKeyframesInterpolated: t in [0, 1] -> weight in [0, 1].
INTERPOLATIONS: dict[str, Callable[[float], float]] = {
    "linear": lambda t: t,
    "ease_in": lambda t: t * t,
    "ease_out": lambda t: 1 - (1 - t) * (1 - t),
    "ease_in_out": lambda t: t * t * (3 - 2 * t),
}


def interpolated_keyframes(strength_start: float, strength_end: float, interpolation: str, start_percent: float,
                           end_percent: float, count: int) -> HookKeyframes:
    """``count`` keyframes from ``strength_start`` to ``strength_end``, evenly spaced over the percent range."""
    curve = INTERPOLATIONS[interpolation]
    frames = []
    for i in range(count):
        t = i / (count - 1)
        strength = strength_start + (strength_end - strength_start) * curve(t)
        frames.append(HookKeyframe(round(strength, 6), start_percent + (end_percent - start_percent) * t))
    return tuple(frames)


def keyframes_from_floats(strengths: Iterable[float], start_percent: float, end_percent: float) -> HookKeyframes:
    """One keyframe per value, spread evenly from ``start_percent`` to ``end_percent``."""
    values = [float(v) for v in strengths]
    if not values:
        raise ValueError("no strengths were given")
    if len(values) == 1:
        return (HookKeyframe(values[0], start_percent),)
    step = (end_percent - start_percent) / (len(values) - 1)
    return tuple(HookKeyframe(v, start_percent + i * step) for i, v in enumerate(values))


@dataclass(frozen=True, eq=False)
class WeightHook:
    """One LoRA (or model-as-LoRA) hook.

    ``place(unet=..., clip=...)`` returns ``(unet adapters, clip adapters)`` keyed by the
    targets' parameter names; it is called once per model the hook meets, then cached.
    """

    place: Callable[..., tuple[Mapping[str, WeightAdapter], Mapping[str, WeightAdapter]]]
    strength_model: float = 1.0
    strength_clip: float = 1.0
    keyframes: HookKeyframes = ()
    name: str = ""

    def with_keyframes(self, keyframes: HookKeyframes) -> WeightHook:
        """This hook with other keyframes (the placed adapters are shared)."""
        return replace(self, keyframes=keyframes)


@dataclass(frozen=True)
class HookGroup:
    """The hooks on one conditioning (ComfyUI's HOOKS), applied in order."""

    hooks: tuple[WeightHook, ...] = ()

    def __add__(self, other: HookGroup) -> HookGroup:
        return HookGroup(self.hooks + tuple(h for h in other.hooks if h not in self.hooks))

    def with_keyframes(self, keyframes: HookKeyframes) -> HookGroup:
        """Every hook with these keyframes."""
        return HookGroup(tuple(h.with_keyframes(keyframes) for h in self.hooks))


def combine(*groups: HookGroup | None) -> HookGroup | None:
    """The hooks of every group given, in order, each once; None when none is given."""
    present = [g for g in groups if g is not None]
    if not present:
        return None
    out = HookGroup()
    for group in present:
        out = out + group
    return out


_PLACED: dict[tuple[int, int], tuple[Mapping[str, WeightAdapter], Mapping[str, WeightAdapter]]] = {}


def _placed(hook: WeightHook, target: Any, role: str) -> Mapping[str, WeightAdapter]:
    key = (id(hook.place), id(target))
    if key not in _PLACED:
        unet, clip = hook.place(**{role: target})
        _PLACED[key] = (unet, clip)
    return _PLACED[key][0 if role == "unet" else 1]


def model_patches(group: HookGroup, unet: Any, base: WeightPatches,
                  percent: float) -> dict[str, tuple[PatchEntry, ...]]:
    """``base`` plus the group's UNet patches at the keyframe strengths in force at ``percent``."""
    out = dict(base)
    for hook in group.hooks:
        strength = hook.strength_model * keyframe_strength(hook.keyframes, percent)
        if strength == 0.0:
            continue
        for key, adapter in _placed(hook, unet, "unet").items():
            out[key] = (*out.get(key, ()), PatchEntry(adapter, strength))
    return out


def clip_adapters(group: HookGroup, clip: Any) -> list[tuple[Mapping[str, WeightAdapter], float]]:
    """``(adapters, strength)`` per hook for a text encoder (first keyframe's strength: CLIP runs once)."""
    out = []
    for hook in group.hooks:
        strength = hook.strength_clip * keyframe_strength(hook.keyframes, 0.0)
        adapters = _placed(hook, clip, "clip")
        if adapters and strength != 0.0:
            out.append((adapters, strength))
    return out


@dataclass(frozen=True, eq=False)
class TowardWeight:
    """``W + strength * (W_other - W)``: another model's weight blended in (a model used as a LoRA)."""

    other: OtherWeight

    def apply(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        """Move the weight ``strength`` of the way to the other model's."""
        target = weight.clone()
        target = self.other.apply(target.zero_(), 1.0)
        if target.shape != weight.shape:
            return weight
        return weight.add_(target.sub_(weight), alpha=strength)


def model_as_lora(unet_source: nn.Module | None, clip_sources: Mapping[str, nn.Module]) -> Callable[..., Any]:
    """A ``place`` function that blends in another checkpoint's UNet and text-encoder weights.

    ``clip_sources`` maps ``clip_l`` / ``clip_g`` to the other checkpoint's text models.
    """
    def place(unet: Any = None, clip: Any = None) -> tuple[dict[str, WeightAdapter], dict[str, WeightAdapter]]:
        unet_out: dict[str, WeightAdapter] = {}
        clip_out: dict[str, WeightAdapter] = {}
        if unet is not None and unet_source is not None:
            own = dict(unet.model.named_parameters())
            for key, value in unet_source.named_parameters():
                if key in own and own[key].shape == value.shape:
                    unet_out[key] = TowardWeight(OtherWeight(unet_source, key))
        if clip is not None:
            for slot, source in clip_sources.items():
                module = getattr(clip, slot, None)
                if module is None:
                    continue
                own = dict(module.named_parameters())
                for key, value in source.named_parameters():
                    if key in own and own[key].shape == value.shape and not key.endswith(".position_ids"):
                        clip_out[f"{slot}.{key}"] = TowardWeight(OtherWeight(source, key))
        return unet_out, clip_out

    return place


def percent_of(sigma: float, sigma_for_percent: Callable[[float], float], steps: int = 1000) -> float:
    """The run percent at which the schedule reaches ``sigma`` (inverse of ``percent_to_sigma``, by bisection)."""
    low, high = 0.0, 1.0
    if sigma >= sigma_for_percent(0.0):
        return 0.0
    for _ in range(int(math.log2(steps)) + 8):
        mid = (low + high) / 2
        if sigma_for_percent(mid) > sigma:
            low = mid
        else:
            high = mid
    return high
