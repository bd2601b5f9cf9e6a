"""Skip-layer guidance nodes for the SD3/Flux transformers (ComfyUI's ``nodes_slg.py`` and ``nodes_sd3.py``).

Each returns a clone of the MODEL with one hook in its ``options``
(:mod:`diffusion.guidance.skip_layer`): SkipLayerGuidanceDiT and SkipLayerGuidanceSD3 add
a post-CFG pass of the positive prompt with the listed blocks skipped and push the
result away from it; SkipLayerGuidanceDiTSimple skips the blocks in the negative pass.
Layers are numbers in a string ("7, 8, 9"): double layers are SD3's joint blocks or
Flux's double blocks, single layers Flux's single blocks (SD3 has none, so they do not
apply there). The MODEL given is never changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from .api import Input, Model, Output, Range, node
from .sampling import _model

_ModelOut = Annotated[Model, Output("MODEL")]
_Layers = Annotated[str, Input(multiline=False)]
_Percent = Annotated[float, Range(0.0, 1.0, step=0.001)]
_Scale = Annotated[float, Range(0.0, 10.0, step=0.1)]
_SLG = "comfy_extras.nodes_slg"


def _layers(model: Any, node_name: str, double_layers: str, single_layers: str) -> tuple[list[int], list[int]]:
    """The parsed layer lists, checked against the transformer's blocks (a one-line error for a missing one)."""
    from diffusion.guidance.skip_layer import parse_layers
    from diffusion.unet_patches.dit_blocks import DOUBLE, SINGLE, block_counts

    model = _model(model)
    if getattr(model, "family", None) not in ("sd3", "flux"):
        raise ValueError(f"{node_name} works on SD3/SD3.5 and Flux models; this MODEL is "
                         f"{getattr(model, 'arch', type(model).__name__)!r}")
    counts = block_counts(model.model)
    double = parse_layers(double_layers)
    single = parse_layers(single_layers) if counts[SINGLE] else []  # SD3 has no single blocks
    for kind, found in ((DOUBLE, double), (SINGLE, single)):
        missing = [i for i in found if i >= counts[kind]]
        if missing:
            raise ValueError(f"{node_name}: this {model.family} model has {counts[kind]} {kind}s "
                             f"(0-{counts[kind] - 1}); no layer {missing[0]}")
    return double, single


def _with_option(model: Any, key: str, hook: Any) -> Any:
    from diffusion.patching import append_model_option, set_model_option

    patched = model.clone()
    if key == "sampler_post_cfg_function":
        append_model_option(patched.options, key, hook)
    else:
        set_model_option(patched.options, key, hook)
    return patched


def _guidance(model: Any, node_name: str, double_layers: str, single_layers: str, scale: float,
              start_percent: float, end_percent: float, rescaling_scale: float) -> Any:
    from diffusion.guidance.skip_layer import skip_layer_guidance

    double, single = _layers(model, node_name, double_layers, single_layers)
    if not double and not single:
        return model
    schedule = model.schedule
    hook = skip_layer_guidance(double, single, scale, schedule.percent_to_sigma(start_percent),
                               schedule.percent_to_sigma(end_percent), rescaling_scale)
    return _with_option(model, "sampler_post_cfg_function", hook)


@node(category="advanced/guidance", experimental=True, python_module=_SLG)
def SkipLayerGuidanceDiT(
    model: Model,
    double_layers: _Layers = "7, 8, 9",
    single_layers: _Layers = "7, 8, 9",
    scale: _Scale = 3.0,
    start_percent: _Percent = 0.01,
    end_percent: _Percent = 0.15,
    rescaling_scale: Annotated[float, Range(0.0, 10.0, step=0.01)] = 0.0,
) -> _ModelOut:
    """Guides away from a pass with these double/single blocks skipped, between the two percents of sampling."""
    return _guidance(model, "SkipLayerGuidanceDiT", double_layers, single_layers, scale, start_percent,
                     end_percent, rescaling_scale)


@node(category="advanced/guidance", experimental=True, python_module=_SLG)
def SkipLayerGuidanceDiTSimple(
    model: Model,
    double_layers: _Layers = "7, 8, 9",
    single_layers: _Layers = "7, 8, 9",
    start_percent: _Percent = 0.0,
    end_percent: _Percent = 1.0,
) -> _ModelOut:
    """Skips these double/single blocks in the negative pass, between the two percents of sampling."""
    from diffusion.guidance.skip_layer import skip_layers_in_uncond

    double, single = _layers(model, "SkipLayerGuidanceDiTSimple", double_layers, single_layers)
    if not double and not single:
        return model
    schedule = model.schedule
    hook = skip_layers_in_uncond(double, single, schedule.percent_to_sigma(start_percent),
                                 schedule.percent_to_sigma(end_percent))
    return _with_option(model, "sampler_calc_cond_batch_function", hook)


@node(category="advanced/guidance", experimental=True, python_module="comfy_extras.nodes_sd3")
def SkipLayerGuidanceSD3(
    model: Model,
    layers: _Layers = "7, 8, 9",
    scale: _Scale = 3.0,
    start_percent: _Percent = 0.01,
    end_percent: _Percent = 0.15,
) -> _ModelOut:
    """SkipLayerGuidanceDiT on SD3's joint blocks: guides away from a pass with these layers skipped."""
    return _guidance(model, "SkipLayerGuidanceSD3", layers, "", scale, start_percent, end_percent, 0.0)
