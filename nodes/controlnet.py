"""ControlNet and T2I-Adapter nodes: loading control models and setting them on conditioning.

Control lives on the CONDITIONING entries, as in ComfyUI: each entry's options get a
``"control"`` (a :class:`diffusion.control.models.Control`) chained to the control it had
before, so two Apply nodes in a row steer the sampler with both models. Apply (the old
node) marks its control to be copied to the negative side at sampling
(``control_apply_to_uncond``); Advanced sets one control on both lists it is given.
Loaded control models are kept in the registry's model cache, like checkpoints.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Conditioning, Context, ControlNet, Image, Model, OneOf, Output, Range, Tooltip, Vae, files_in, node
from .loaders import _model_file

#: SetUnionControlNetType's choices: the union ControlNet's control types, in its order.
UNION_TYPES = ("auto", "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal",
               "segment", "tile", "repaint")

Strength = Annotated[float, Range(0.0, 10.0, step=0.01)]
Percent = Annotated[float, Range(0.0, 1.0, step=0.001)]


def _load(ctx: Context, name: str, base: Any = None) -> Any:
    from diffusion.control.load import load_control_model
    from diffusion.memory import pick_device

    path = _model_file(ctx, "controlnet", name, "ControlNet")
    precision = ctx.services.precision

    def load() -> Any:
        from diffusion.checkpoint import TensorFile
        from diffusion.control.sd3 import is_sd3_controlnet, load_sd3_controlnet

        with TensorFile(path) as file:
            sd3 = is_sd3_controlnet(file.shapes)
        if sd3:
            return load_sd3_controlnet(path, precision=precision, device=pick_device())
        return load_control_model(path, precision=precision, device=pick_device(), base=base)

    options: tuple[Any, ...] = ("control", precision)
    if base is not None:
        # A diff ControlNet depends on the model's weights as they are (base module and patches).
        options += (id(base.model), tuple(sorted((k, v) for k, v in base.weight_patches.items())))
    return ctx.services.model_cache().get(path, options, load)


def _hint(image: Any, node_name: str) -> Any:
    """The IMAGE as a hint, or a one-line error naming the node for anything else."""
    if getattr(image, "ndim", 0) != 4 or image.shape[0] < 1:
        raise ValueError(f"{node_name}: the image must be an IMAGE batch [B, H, W, C]")
    return image


@node(category="loaders", display_name="Load ControlNet Model")
def ControlNetLoader(
    control_net_name: Annotated[str, OneOf(files_in("controlnet")), Tooltip("The ControlNet or T2I-Adapter file.")],
    *,
    ctx: Context,
) -> ControlNet:
    """Loads a ControlNet or T2I-Adapter model (SD1.x, SD2.x or SDXL) from the controlnet folder."""
    return _load(ctx, control_net_name)


@node(category="loaders", display_name="Load ControlNet Model (diff)")
def DiffControlNetLoader(
    model: Annotated[Model, Tooltip("The model the diff ControlNet was made from; its weights are added.")],
    control_net_name: Annotated[str, OneOf(files_in("controlnet"))],
    *,
    ctx: Context,
) -> ControlNet:
    """Loads a "diff" ControlNet: one stored as the difference to a model's weights, which are added back."""
    return _load(ctx, control_net_name, base=model)


def _apply(conditioning: Any, control: Any, chained: dict[int, Any], to_uncond: bool) -> list[list[Any]]:
    """New entries with ``control(previous)`` set; entries that had the same previous control share one."""
    out = []
    for entry in conditioning:
        options = dict(entry[1])
        previous = options.get("control")
        key = id(previous)
        if key not in chained:
            chained[key] = control(previous)
        options["control"] = chained[key]
        options["control_apply_to_uncond"] = to_uncond
        out.append([entry[0], options])
    return out


@node(category="conditioning/controlnet", display_name="Apply ControlNet (OLD)", deprecated=True)
def ControlNetApply(
    conditioning: Conditioning,
    control_net: ControlNet,
    image: Annotated[Image, Tooltip("The hint image (edges, depth, pose, ...), resized to the latent's size.")],
    strength: Strength = 1.0,
) -> Conditioning:
    """Steers the conditioning with a ControlNet or T2I-Adapter and a hint image (both CFG sides at sampling)."""
    from diffusion.control.models import Control

    if strength == 0:
        return conditioning
    hint = _hint(image, "ControlNetApply")
    return _apply(conditioning, lambda prev: Control(control_net, hint, strength, previous=prev), {}, True)


@node(category="conditioning/controlnet", display_name="Apply ControlNet")
def ControlNetApplyAdvanced(
    positive: Conditioning,
    negative: Conditioning,
    control_net: ControlNet,
    image: Annotated[Image, Tooltip("The hint image (edges, depth, pose, ...), resized to the latent's size.")],
    strength: Strength = 1.0,
    start_percent: Annotated[Percent, Tooltip("When the control starts, as a fraction of the sampling.")] = 0.0,
    end_percent: Annotated[Percent, Tooltip("When the control ends, as a fraction of the sampling.")] = 1.0,
    vae: Vae | None = None,
) -> tuple[Annotated[Conditioning, Output("positive")], Annotated[Conditioning, Output("negative")]]:
    """Steers both conditionings with a control model and a hint image, for part of the sampling."""
    if strength == 0:
        return positive, negative
    if start_percent > end_percent:
        raise ValueError(f"ControlNetApplyAdvanced: start_percent {start_percent} is after end_percent {end_percent}")
    hint = _hint(image, "ControlNetApplyAdvanced")
    return _apply_both(positive, negative, control_net, hint, strength, start_percent, end_percent, vae)


def _apply_both(positive: Any, negative: Any, control_net: Any, hint: Any, strength: float, start_percent: float,
                end_percent: float, vae: Any) -> tuple[Any, Any]:
    """Both conditionings with one control (per previous control) set, the VAE bound to an SD3 ControlNet."""
    from diffusion.control.models import Control
    from diffusion.control.sd3 import ARCH, with_vae

    if vae is not None:
        control_net = with_vae(control_net, vae)
    elif getattr(control_net, "arch", None) == ARCH:
        raise ValueError("an SD3 ControlNet needs a VAE to encode its hint: connect the vae input")
    chained: dict[int, Any] = {}

    def control(previous: Any) -> Any:
        return Control(control_net, hint, strength, (start_percent, end_percent), previous=previous, vae=vae)

    return _apply(positive, control, chained, False), _apply(negative, control, chained, False)


@node(category="conditioning/controlnet", display_name="Apply Controlnet with VAE", deprecated=True,
      python_module="comfy_extras.nodes_sd3")
def ControlNetApplySD3(
    positive: Conditioning,
    negative: Conditioning,
    control_net: ControlNet,
    vae: Vae,
    image: Annotated[Image, Tooltip("The hint image, VAE-encoded for the SD3 ControlNet.")],
    strength: Strength = 1.0,
    start_percent: Percent = 0.0,
    end_percent: Percent = 1.0,
) -> tuple[Annotated[Conditioning, Output("positive")], Annotated[Conditioning, Output("negative")]]:
    """Steers both conditionings with an SD3 ControlNet, its hint image encoded by the VAE (ControlNetApplyAdvanced
    with a VAE)."""
    if strength == 0:
        return positive, negative
    if start_percent > end_percent:
        raise ValueError(f"ControlNetApplySD3: start_percent {start_percent} is after end_percent {end_percent}")
    hint = _hint(image, "ControlNetApplySD3")
    return _apply_both(positive, negative, control_net, hint, strength, start_percent, end_percent, vae)


@node(category="conditioning/controlnet", python_module="comfy_extras.nodes_controlnet")
def SetUnionControlNetType(
    control_net: ControlNet,
    type: Annotated[str, OneOf(UNION_TYPES)],
) -> ControlNet:
    """Picks the control type a union (ControlNet++) model reads its hint as; auto lets the model decide."""
    return control_net.with_union_type(None if type == "auto" else type)
