"""The hooks family: LoRAs (or whole models) scoped to conditionings and scheduled over the run.

A HOOKS value (``diffusion.hooks.HookGroup``) is attached to conditioning entries
(``ConditioningSetProperties``, or ``SetClipHooks`` for what a CLIP encodes); while
sampling, each entry runs with its hooks' weight patches at the strength of the keyframe in
force. Keyframes (HOOK_KEYFRAMES) multiply a hook's strengths from a start percent on.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import REQUIRED, Clip, Conditioning, Context, Input, Mask, OneOf, Output, Range, Socket, files_in, node

Hooks = Socket("HOOKS")
HookKeyframesType = Socket("HOOK_KEYFRAMES")
TimestepsRange = Socket("TIMESTEPS_RANGE")
Floats = Socket("FLOATS")
HookStrength = Annotated[float, Range(-20.0, 20.0, step=0.01)]
Percent = Annotated[float, Range(0.0, 1.0, step=0.001)]
PropStrength = Annotated[float, Range(0.0, 10.0, step=0.01)]
CondArea = Annotated[str, OneOf(("default", "mask bounds"))]


def _lora_hook(ctx: Context, lora_name: str, strength_model: float, strength_clip: float) -> Any:
    from diffusion.hooks import WeightHook
    from diffusion.lora.keys import is_text_encoder_stem
    from diffusion.lora.load import LoraFile, lora_patches

    from .lora import _lora_file

    lora = _lora_file(ctx, lora_name)
    text_only = LoraFile(lora.name, {k: v for k, v in lora.adapters.items() if is_text_encoder_stem(k[0])})

    def place(unet: Any = None, clip: Any = None) -> tuple[Any, Any]:
        if unet is not None:
            return lora_patches(lora, unet=unet).unet, {}
        return {}, (lora_patches(text_only, clip=clip).clip if text_only.adapters else {})

    return WeightHook(place, strength_model, strength_clip, name=lora_name)


def _model_hook(ctx: Context, ckpt_name: str, strength_model: float, strength_clip: float, with_clip: bool) -> Any:
    from diffusion.checkpoint import load_checkpoint
    from diffusion.hooks import WeightHook, model_as_lora
    from diffusion.memory import pick_device

    from .loaders import _model_file

    path = _model_file(ctx, "checkpoints", ckpt_name, "Checkpoint")
    precision = ctx.services.precision
    loaded = ctx.services.model_cache().get(
        path, ("checkpoint", precision), lambda: load_checkpoint(path, precision=precision, device=pick_device()))
    clips = {}
    if with_clip and loaded.clip is not None:
        clips = {s: getattr(loaded.clip, s) for s in ("clip_l", "clip_g") if getattr(loaded.clip, s) is not None}
    unet = loaded.unet.model if loaded.unet is not None else None
    return WeightHook(model_as_lora(unet, clips), strength_model, strength_clip, name=ckpt_name)


def _chain(prev_hooks: Any, hook: Any) -> Any:
    from diffusion.hooks import HookGroup, combine

    return combine(prev_hooks, HookGroup((hook,)))


@node(category="advanced/hooks/create", display_name="Create Hook LoRA")
def CreateHookLora(lora_name: Annotated[str, OneOf(files_in("loras"))], strength_model: HookStrength = 1.0,
                   strength_clip: HookStrength = 1.0, prev_hooks: Hooks | None = None, *, ctx: Context) -> Hooks:
    """A hook that applies a LoRA only to the conditionings it is attached to."""
    return _chain(prev_hooks, _lora_hook(ctx, lora_name, strength_model, strength_clip))


@node(category="advanced/hooks/create", display_name="Create Hook LoRA (MO)")
def CreateHookLoraModelOnly(lora_name: Annotated[str, OneOf(files_in("loras"))], strength_model: HookStrength = 1.0,
                            prev_hooks: Hooks | None = None, *, ctx: Context) -> Hooks:
    """A hook that applies a LoRA to the diffusion model only, for the conditionings it is attached to."""
    return _chain(prev_hooks, _lora_hook(ctx, lora_name, strength_model, 0.0))


@node(category="advanced/hooks/create", display_name="Create Hook Model as LoRA")
def CreateHookModelAsLora(ckpt_name: Annotated[str, OneOf(files_in("checkpoints"))],
                          strength_model: HookStrength = 1.0, strength_clip: HookStrength = 1.0,
                          prev_hooks: Hooks | None = None, *, ctx: Context) -> Hooks:
    """A hook that blends another checkpoint's weights in (strength 1: that model), for its conditionings."""
    return _chain(prev_hooks, _model_hook(ctx, ckpt_name, strength_model, strength_clip, True))


@node(category="advanced/hooks/create", display_name="Create Hook Model as LoRA (MO)")
def CreateHookModelAsLoraModelOnly(ckpt_name: Annotated[str, OneOf(files_in("checkpoints"))],
                                   strength_model: HookStrength = 1.0, prev_hooks: Hooks | None = None, *,
                                   ctx: Context) -> Hooks:
    """A hook that blends another checkpoint's diffusion model in, for the conditionings it is attached to."""
    return _chain(prev_hooks, _model_hook(ctx, ckpt_name, strength_model, 0.0, False))


@node(category="advanced/hooks/clip", display_name="Set CLIP Hooks")
def SetClipHooks(clip: Clip, apply_to_conds: bool = True, schedule_clip: bool = False,
                 hooks: Hooks | None = None) -> Clip:
    """Applies hooks' text-encoder weights to a CLIP; with apply_to_conds, what it encodes carries the hooks.

    The CLIP runs once per prompt, so it uses each hook's strength at the start of the run
    (``schedule_clip`` does not re-encode per keyframe).
    """
    from diffusion.hooks import clip_adapters

    if hooks is None:
        return clip
    out = clip
    for adapters, strength in clip_adapters(hooks, clip):
        out = out.with_patches(adapters, strength)
    return out.with_cond_hooks(hooks if apply_to_conds else None)


def _combine_hooks(*groups: Any) -> Any:
    from diffusion.hooks import combine

    return combine(*groups)


@node(category="advanced/hooks/combine", display_name="Combine Hooks [2]")
def CombineHooks2(hooks_A: Hooks | None = None, hooks_B: Hooks | None = None) -> Hooks:
    """Joins two hook groups into one."""
    return _combine_hooks(hooks_A, hooks_B)


@node(category="advanced/hooks/combine", display_name="Combine Hooks [4]")
def CombineHooks4(hooks_A: Hooks | None = None, hooks_B: Hooks | None = None,
                  hooks_C: Hooks | None = None, hooks_D: Hooks | None = None) -> Hooks:
    """Joins up to four hook groups into one."""
    return _combine_hooks(hooks_A, hooks_B, hooks_C, hooks_D)


@node(category="advanced/hooks/combine", display_name="Combine Hooks [8]")
def CombineHooks8(hooks_A: Hooks | None = None, hooks_B: Hooks | None = None,
                  hooks_C: Hooks | None = None, hooks_D: Hooks | None = None,
                  hooks_E: Hooks | None = None, hooks_F: Hooks | None = None,
                  hooks_G: Hooks | None = None, hooks_H: Hooks | None = None) -> Hooks:
    """Joins up to eight hook groups into one."""
    return _combine_hooks(hooks_A, hooks_B, hooks_C, hooks_D, hooks_E, hooks_F, hooks_G, hooks_H)


@node(category="advanced/hooks/scheduling", display_name="Create Hook Keyframe")
def CreateHookKeyframe(strength_mult: HookStrength = 1.0, start_percent: Percent = 0.0,
                       prev_hook_kf: HookKeyframesType | None = None,
                       ) -> Annotated[HookKeyframesType, Output("HOOK_KF")]:
    """A keyframe: from start_percent of the run on, the hooks' strengths are multiplied by strength_mult."""
    from diffusion.hooks import HookKeyframe, add_keyframe

    return add_keyframe(prev_hook_kf or (), HookKeyframe(strength_mult, start_percent))


@node(category="advanced/hooks/scheduling", display_name="Create Hook Keyframes From Floats")
def CreateHookKeyframesFromFloats(
    floats_strength: Annotated[Floats, Input(default=-1, min=-1, step=0.001, force_input=True)],
    start_percent: Percent = 0.0,
    end_percent: Percent = 1.0,
    print_keyframes: bool = False,
    prev_hook_kf: HookKeyframesType | None = None,
) -> Annotated[HookKeyframesType, Output("HOOK_KF")]:
    """One keyframe per value of a float list, spread evenly between the two percents."""
    from diffusion.hooks import add_keyframe, keyframes_from_floats

    values = [floats_strength] if isinstance(floats_strength, int | float) else list(floats_strength)
    out = tuple(prev_hook_kf or ())
    for keyframe in keyframes_from_floats(values, start_percent, end_percent):
        out = add_keyframe(out, keyframe)
    if print_keyframes:
        _log_keyframes(out)
    return out


@node(category="advanced/hooks/scheduling", display_name="Create Hook Keyframes Interp.")
def CreateHookKeyframesInterpolated(
    strength_start: Annotated[float, Range(0.0, 10.0, step=0.001)] = 1.0,
    strength_end: Annotated[float, Range(0.0, 10.0, step=0.001)] = 1.0,
    interpolation: Annotated[str, OneOf(("linear", "ease_in", "ease_out", "ease_in_out"))] = REQUIRED,
    start_percent: Percent = 0.0,
    end_percent: Percent = 1.0,
    keyframes_count: Annotated[int, Range(2, 100, step=1)] = 5,
    print_keyframes: bool = False,
    prev_hook_kf: HookKeyframesType | None = None,
) -> Annotated[HookKeyframesType, Output("HOOK_KF")]:
    """Keyframes that move the strength from strength_start to strength_end along a curve."""
    from diffusion.hooks import add_keyframe, interpolated_keyframes

    out = tuple(prev_hook_kf or ())
    for keyframe in interpolated_keyframes(strength_start, strength_end, interpolation, start_percent, end_percent,
                                           keyframes_count):
        out = add_keyframe(out, keyframe)
    if print_keyframes:
        _log_keyframes(out)
    return out


def _log_keyframes(keyframes: Any) -> None:
    import logging

    for k in keyframes:
        logging.getLogger(__name__).info("hook keyframe: strength %.3f from %.3f", k.strength, k.start_percent)


@node(category="advanced/hooks/scheduling", display_name="Set Hook Keyframes")
def SetHookKeyframes(hooks: Hooks, hook_kf: HookKeyframesType | None = None) -> Hooks:
    """Gives every hook of the group these keyframes."""
    return hooks if hook_kf is None else hooks.with_keyframes(tuple(hook_kf))


@node(category="advanced/hooks", display_name="Timesteps Range")
def ConditioningTimestepsRange(start_percent: Percent = 0.0, end_percent: Percent = 1.0) -> tuple[
    Annotated[TimestepsRange, Output("TIMESTEPS_RANGE")],
    Annotated[TimestepsRange, Output("BEFORE_RANGE")],
    Annotated[TimestepsRange, Output("AFTER_RANGE")],
]:
    """A part of the run, and the parts before and after it."""
    return (start_percent, end_percent), (0.0, start_percent), (end_percent, 1.0)


def _props(conditioning: Any, strength: float, set_cond_area: str, mask: Any, hooks: Any, timesteps: Any,
           default: bool = False) -> list[Any]:
    """A copy of each entry with the properties set (ConditioningSetProperties' rules)."""
    out = []
    for cond, options in conditioning:
        options = dict(options)
        if mask is not None:
            options.update(mask=mask, set_area_to_bounds=set_cond_area != "default", mask_strength=strength)
        else:
            options["strength"] = strength
        if hooks is not None:
            options["hooks"] = hooks
        if timesteps is not None:
            options.update(start_percent=float(timesteps[0]), end_percent=float(timesteps[1]))
        if default:
            options["default"] = True
        out.append([cond, options])
    return out


@node(category="advanced/hooks/cond single", display_name="Cond Set Props")
def ConditioningSetProperties(cond_NEW: Conditioning, strength: PropStrength = 1.0,
                              set_cond_area: CondArea = REQUIRED, mask: Mask | None = None,
                              hooks: Hooks | None = None, timesteps: TimestepsRange | None = None) -> Conditioning:
    """Sets strength, mask, hooks and timestep range on every entry of a conditioning."""
    return _props(cond_NEW, strength, set_cond_area, mask, hooks, timesteps)


@node(category="advanced/hooks/cond single", display_name="Cond Set Props Combine")
def ConditioningSetPropertiesAndCombine(cond: Conditioning, cond_NEW: Conditioning,
                                        strength: PropStrength = 1.0, set_cond_area: CondArea = REQUIRED,
                                        mask: Mask | None = None, hooks: Hooks | None = None,
                                        timesteps: TimestepsRange | None = None) -> Conditioning:
    """Sets the properties on cond_NEW's entries and adds them to cond."""
    return list(cond) + _props(cond_NEW, strength, set_cond_area, mask, hooks, timesteps)


@node(category="advanced/hooks/cond single", display_name="Cond Set Default Combine")
def ConditioningSetDefaultCombine(cond: Conditioning, cond_DEFAULT: Conditioning,
                                  hooks: Hooks | None = None) -> Conditioning:
    """Adds cond_DEFAULT as the fallback: used at the steps where no other entry applies."""
    return list(cond) + _props(cond_DEFAULT, 1.0, "default", None, hooks, None, default=True)


@node(category="advanced/hooks/cond pair", display_name="Cond Pair Set Props")
def PairConditioningSetProperties(positive_NEW: Conditioning, negative_NEW: Conditioning,
                                  strength: PropStrength = 1.0, set_cond_area: CondArea = REQUIRED,
                                  mask: Mask | None = None, hooks: Hooks | None = None,
                                  timesteps: TimestepsRange | None = None) -> tuple[
                                      Annotated[Conditioning, Output("positive")],
                                      Annotated[Conditioning, Output("negative")]]:
    """Cond Set Props on a positive and a negative conditioning at once."""
    return (_props(positive_NEW, strength, set_cond_area, mask, hooks, timesteps),
            _props(negative_NEW, strength, set_cond_area, mask, hooks, timesteps))


@node(category="advanced/hooks/cond pair", display_name="Cond Pair Set Props Combine")
def PairConditioningSetPropertiesAndCombine(positive: Conditioning, negative: Conditioning,
                                            positive_NEW: Conditioning, negative_NEW: Conditioning,
                                            strength: PropStrength = 1.0, set_cond_area: CondArea = REQUIRED,
                                            mask: Mask | None = None, hooks: Hooks | None = None,
                                            timesteps: TimestepsRange | None = None) -> tuple[
                                                Annotated[Conditioning, Output("positive")],
                                                Annotated[Conditioning, Output("negative")]]:
    """Cond Set Props Combine on a positive and a negative conditioning at once."""
    return (list(positive) + _props(positive_NEW, strength, set_cond_area, mask, hooks, timesteps),
            list(negative) + _props(negative_NEW, strength, set_cond_area, mask, hooks, timesteps))


@node(category="advanced/hooks/cond pair", display_name="Cond Pair Set Default Combine")
def PairConditioningSetDefaultCombine(positive: Conditioning, negative: Conditioning,
                                      positive_DEFAULT: Conditioning, negative_DEFAULT: Conditioning,
                                      hooks: Hooks | None = None) -> tuple[
                                          Annotated[Conditioning, Output("positive")],
                                          Annotated[Conditioning, Output("negative")]]:
    """Cond Set Default Combine on a positive and a negative conditioning at once."""
    return (list(positive) + _props(positive_DEFAULT, 1.0, "default", None, hooks, None, default=True),
            list(negative) + _props(negative_DEFAULT, 1.0, "default", None, hooks, None, default=True))


@node(category="advanced/hooks/cond pair", display_name="Cond Pair Combine")
def PairConditioningCombine(positive_A: Conditioning, negative_A: Conditioning,
                            positive_B: Conditioning, negative_B: Conditioning) -> tuple[
                                Annotated[Conditioning, Output("positive")],
                                Annotated[Conditioning, Output("negative")]]:
    """Joins two positive/negative pairs."""
    return list(positive_A) + list(positive_B), list(negative_A) + list(negative_B)
