"""Hooks: LoRAs scoped to conditionings, scheduled by keyframes, exactly as the same LoRA loaded on the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffusion.hooks import HookKeyframe, interpolated_keyframes, keyframe_strength, keyframes_from_floats
from diffusion.ksampler import ksample
from diffusion.lora.synthetic import write_lora
from nodes import hooks as H
from nodes.api import Context, Services
from nodes.folders import Folders
from nodes.lora import LoraLoader, LoraLoaderModelOnly

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Exec:
    """What the executor hands a node: ids, progress, interruption."""

    node_id, prompt_id = "1", "p"

    def progress(self, value: int, total: int, preview: object = None) -> None:
        pass

    def check_interrupted(self) -> None:
        pass


@pytest.fixture(scope="module")
def setup(tiny_sd15_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from diffusion.checkpoint import load_checkpoint

    base = tmp_path_factory.mktemp("hooks")
    write_lora(base / "models" / "loras" / "a.safetensors", base=tiny_sd15_path, rank=4, seed=1)
    services = Services(folders=Folders(base))
    ctx = Context(_Exec(), services)  # type: ignore[arg-type]
    loaded = load_checkpoint(tiny_sd15_path, precision="fp32", device=torch.device("cpu"))
    return ctx, loaded.unet, loaded.clip


def _sample(unet, positive, negative, cfg: float = 1.0, steps: int = 3) -> torch.Tensor:
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return ksample(unet, 7, steps, cfg, "euler", "normal", positive, negative, latent)["samples"]


def _encode(clip, text: str) -> list:
    cond, pooled = clip.encode(text)
    return [[cond, {"pooled_output": pooled}]]


def test_a_hook_on_the_conditioning_equals_the_lora_on_the_model(setup) -> None:
    ctx, unet, clip = setup
    positive, negative = _encode(clip, "a red circle"), _encode(clip, "")
    hooks = H.CreateHookLoraModelOnly("a.safetensors", 0.8, ctx=ctx)
    hooked = H.ConditioningSetProperties(positive, 1.0, "default", hooks=hooks)
    loaded = LoraLoaderModelOnly(unet, "a.safetensors", 0.8, ctx=ctx)
    assert torch.equal(_sample(unet, hooked, negative), _sample(loaded, positive, negative))
    assert not torch.equal(_sample(unet, hooked, negative), _sample(unet, positive, negative))
    # The unhooked negative runs without the LoRA: at cfg > 1 the result differs from the LoRA everywhere.
    assert not torch.equal(_sample(unet, hooked, negative, cfg=4.0), _sample(loaded, positive, negative, cfg=4.0))


def test_keyframes_schedule_the_strength(setup) -> None:
    ctx, unet, clip = setup
    positive, negative = _encode(clip, "a red circle"), _encode(clip, "")
    hooks = H.CreateHookLoraModelOnly("a.safetensors", 1.0, ctx=ctx)
    off = H.SetHookKeyframes(hooks, H.CreateHookKeyframe(0.0, 0.0))
    assert torch.equal(_sample(unet, H.ConditioningSetProperties(positive, 1.0, "default", hooks=off), negative),
                       _sample(unet, positive, negative))
    late = H.SetHookKeyframes(hooks, H.CreateHookKeyframe(1.0, 0.5, H.CreateHookKeyframe(0.0, 0.0)))
    late_result = _sample(unet, H.ConditioningSetProperties(positive, 1.0, "default", hooks=late), negative)
    assert not torch.equal(late_result, _sample(unet, positive, negative))
    assert not torch.equal(late_result, _sample(unet, H.ConditioningSetProperties(positive, 1.0, "default",
                                                                                  hooks=hooks), negative))


def test_keyframe_helpers() -> None:
    frames = (HookKeyframe(0.0, 0.0), HookKeyframe(2.0, 0.5))
    assert keyframe_strength(frames, 0.49) == 0.0 and keyframe_strength(frames, 0.5) == 2.0
    assert keyframe_strength((), 0.3) == 1.0
    interp = interpolated_keyframes(0.0, 1.0, "linear", 0.0, 1.0, 5)
    assert [k.strength for k in interp] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [k.start_percent for k in keyframes_from_floats([1, 2, 3], 0.2, 0.6)] == pytest.approx([0.2, 0.4, 0.6])
    assert H.ConditioningTimestepsRange(0.3, 0.7) == ((0.3, 0.7), (0.0, 0.3), (0.7, 1.0))


def test_clip_hooks_patch_the_text_encoder_and_tag_the_conditioning(setup) -> None:
    ctx, unet, clip = setup
    hooks = H.CreateHookLora("a.safetensors", 1.0, 0.7, ctx=ctx)
    hooked_clip = H.SetClipHooks(clip, True, False, hooks)
    _, lora_clip = LoraLoader(unet, clip, "a.safetensors", 1.0, 0.7, ctx=ctx)
    from nodes.conditioning import CLIPTextEncode

    cond = CLIPTextEncode("a red circle", hooked_clip, ctx=ctx)
    assert cond[0][1]["hooks"] is hooks
    assert torch.equal(cond[0][0], lora_clip.encode("a red circle")[0])
    assert "hooks" not in CLIPTextEncode("a red circle", H.SetClipHooks(clip, False, False, hooks), ctx=ctx)[0][1]


def test_default_conditioning_fills_the_steps_no_other_entry_covers(setup) -> None:
    _, unet, clip = setup
    red, blue, negative = _encode(clip, "a red circle"), _encode(clip, "a blue square"), _encode(clip, "")
    early = H.ConditioningSetProperties(red, 1.0, "default", timesteps=(0.0, 0.5))
    combined = H.ConditioningSetDefaultCombine(early, blue)
    late_blue = H.ConditioningSetProperties(blue, 1.0, "default", timesteps=(0.5, 1.0))
    assert torch.equal(_sample(unet, combined, negative, steps=4),
                       _sample(unet, early + late_blue, negative, steps=4))


def test_combine_hooks_keeps_order_and_skips_missing(setup) -> None:
    ctx, _, _ = setup
    a = H.CreateHookLoraModelOnly("a.safetensors", 1.0, ctx=ctx)
    b = H.CreateHookLoraModelOnly("a.safetensors", 0.5, ctx=ctx)
    both = H.CombineHooks4(a, None, b, None)
    assert both.hooks == a.hooks + b.hooks
    assert H.CombineHooks2(None, None) is None
