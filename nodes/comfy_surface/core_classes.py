"""ComfyUI's core node classes (``nodes.KSampler``, ``comfy_extras.nodes_latent.LatentBatch``...) for packs.

Each class is made on first use from the active registry's built-in node of that name: it
has ComfyUI's ``INPUT_TYPES``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``CATEGORY``,
``FUNCTION`` and a method of that name whose positional parameters are in ComfyUI's
order (:data:`FUNCTIONS`), so ``CLIPTextEncode().encode(clip, text)`` works and packs can
subclass them. The method runs our built-in node. A name with no entry in
:data:`FUNCTIONS`, or whose node is not registered, raises an AttributeError naming it.
"""

from __future__ import annotations

from typing import Any

from . import NotProvidedError, runtime

#: ComfyUI module -> class name -> (FUNCTION, its positional parameters in ComfyUI's order).
FUNCTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "nodes": {
        "KSampler": ("sample", "model seed steps cfg sampler_name scheduler positive negative latent_image denoise"),
        "KSamplerAdvanced": ("sample", "model add_noise noise_seed steps cfg sampler_name scheduler positive "
                                       "negative latent_image start_at_step end_at_step return_with_leftover_noise "
                                       "denoise"),
        "CheckpointLoaderSimple": ("load_checkpoint", "ckpt_name"),
        "CLIPTextEncode": ("encode", "clip text"),
        "CLIPSetLastLayer": ("set_last_layer", "clip stop_at_clip_layer"),
        "ConditioningCombine": ("combine", "conditioning_1 conditioning_2"),
        "ConditioningSetArea": ("append", "conditioning width height x y strength"),
        "ConditioningZeroOut": ("zero_out", "conditioning"),
        "VAEDecode": ("decode", "vae samples"),
        "VAEEncode": ("encode", "vae pixels"),
        "VAEDecodeTiled": ("decode", "vae samples tile_size overlap temporal_size temporal_overlap"),
        "VAEEncodeTiled": ("encode", "vae pixels tile_size overlap temporal_size temporal_overlap"),
        "VAELoader": ("load_vae", "vae_name"),
        "EmptyLatentImage": ("generate", "width height batch_size"),
        "LatentUpscale": ("upscale", "samples upscale_method width height crop"),
        "LatentUpscaleBy": ("upscale", "samples upscale_method scale_by"),
        "SaveImage": ("save_images", "images filename_prefix prompt extra_pnginfo"),
        "PreviewImage": ("save_images", "images filename_prefix prompt extra_pnginfo"),
        "LoadImage": ("load_image", "image"),
        "LoraLoader": ("load_lora", "model clip lora_name strength_model strength_clip"),
        "LoraLoaderModelOnly": ("load_lora_model_only", "model lora_name strength_model"),
        "ControlNetLoader": ("load_controlnet", "control_net_name"),
        "ControlNetApply": ("apply_controlnet", "conditioning control_net image strength"),
        "ControlNetApplyAdvanced": ("apply_controlnet", "positive negative control_net image strength "
                                                        "start_percent end_percent vae"),
        "ImageScale": ("upscale", "image upscale_method width height crop"),
        "ImageScaleBy": ("upscale", "image upscale_method scale_by"),
        "ImageInvert": ("invert", "image"),
        "SetLatentNoiseMask": ("set_mask", "samples mask"),
        "ConditioningAverage": ("addWeighted", "conditioning_to conditioning_from conditioning_to_strength"),
        "ConditioningConcat": ("concat", "conditioning_to conditioning_from"),
        "ConditioningSetTimestepRange": ("set_range", "conditioning start end"),
        "ImageBatch": ("batch", "image1 image2"),
    },
    "comfy_extras.nodes_align_your_steps": {
        "AlignYourStepsScheduler": ("get_sigmas", "model_type steps denoise"),
    },
    "comfy_extras.nodes_gits": {
        "GITSScheduler": ("get_sigmas", "coeff steps denoise"),
    },
    "comfy_extras.nodes_model_advanced": {
        "ModelSamplingFlux": ("patch", "model max_shift base_shift width height"),
        "ModelSamplingAuraFlow": ("patch_aura", "model shift"),
    },
    "comfy_extras.nodes_clip_sdxl": {
        "CLIPTextEncodeSDXL": ("encode", "clip width height crop_w crop_h target_width target_height text_g text_l"),
        "CLIPTextEncodeSDXLRefiner": ("encode", "clip ascore width height text"),
    },
    "comfy_extras.nodes_latent": {
        "LatentBatch": ("batch", "samples1 samples2"),
        "LatentAdd": ("op", "samples1 samples2"),
        "LatentSubtract": ("op", "samples1 samples2"),
        "LatentMultiply": ("op", "samples multiplier"),
    },
    "comfy_extras.nodes_upscale_model": {
        "UpscaleModelLoader": ("load_model", "model_name"),
        "ImageUpscaleWithModel": ("upscale", "upscale_model image"),
    },
    "comfy_extras.nodes_custom_sampler": {
        "SamplerCustom": ("sample", "model add_noise noise_seed cfg positive negative sampler sigmas latent_image"),
        "SamplerCustomAdvanced": ("sample", "noise guider sampler sigmas latent_image"),
        "BasicScheduler": ("get_sigmas", "model scheduler steps denoise"),
        "KSamplerSelect": ("get_sampler", "sampler_name"),
        "BasicGuider": ("get_guider", "model conditioning"),
        "CFGGuider": ("get_guider", "model positive negative cfg"),
        "Noise_RandomNoise": ("get_noise", "noise_seed"),
    },
}
#: ComfyUI class names that are registered under another node name.
NODE_NAMES = {"Noise_RandomNoise": "RandomNoise"}

_classes: dict[tuple[str, str], type] = {}


def core_class(module: str, name: str) -> type:
    """ComfyUI's class ``module.name`` (made once, then the same object), or AttributeError naming it."""
    key = (module, name)
    if key in _classes:
        return _classes[key]
    entry = FUNCTIONS.get(module, {}).get(name)
    if entry is None:
        raise NotProvidedError(f"noodlebox does not provide ComfyUI's {module}.{name}")
    node_name = NODE_NAMES.get(name, name)
    schema = runtime.builtin(node_name)
    cls = _make(name, node_name, schema, *entry, module)
    _classes[key] = cls
    return cls


def _make(class_name: str, node_name: str, schema: Any, function: str, params: str, module: str) -> type:
    order = params.split()

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(order):
            raise TypeError(f"{class_name}.{function}() takes at most {len(order)} positional arguments")
        values = dict(zip(order, args, strict=False))
        values.update(kwargs)
        return runtime.call_builtin(node_name, values)

    def input_types(cls: type) -> dict[str, Any]:
        from ..object_info import node_info

        return node_info(runtime.builtin(node_name))["input"]

    method.__name__ = function
    method.__doc__ = f"Runs noodlebox's {node_name} node; parameters: {', '.join(order)}."
    # ComfyUI's resize nodes expose their combo lists as class attributes (upscale_methods, crop_methods).
    lists = {attr: list(spec.choices() if callable(spec.choices) else spec.choices) for spec in schema.inputs
             for input_name, attr in (("upscale_method", "upscale_methods"), ("crop", "crop_methods"))
             if spec.name == input_name and spec.choices}
    return type(class_name, (), {
        **lists,
        "__module__": module,
        "__doc__": schema.description or f"ComfyUI's {class_name}, run by noodlebox.",
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.type for o in schema.outputs),
        "RETURN_NAMES": tuple(o.name for o in schema.outputs),
        "OUTPUT_IS_LIST": tuple(o.is_list for o in schema.outputs),
        "FUNCTION": function,
        "CATEGORY": schema.category,
        "OUTPUT_NODE": schema.output_node,
        "DESCRIPTION": schema.description,
        function: method,
    })


def available(module: str) -> dict[str, type]:
    """Every class of ``module`` whose node the active registry has."""
    out = {}
    for name in FUNCTIONS.get(module, {}):
        try:
            out[name] = core_class(module, name)
        except NotProvidedError:
            continue
    return out
