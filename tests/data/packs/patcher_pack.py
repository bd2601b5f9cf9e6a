"""A pack that patches a MODEL through comfy.model_patcher, as guidance packs do."""

import comfy.model_patcher
import comfy.sd
import comfy.utils
import folder_paths


class ScaledGuidance:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"model": ("MODEL",), "scale": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "test/packs"

    def patch(self, model, scale):
        assert isinstance(model, comfy.model_patcher.ModelPatcher)
        patched = model.clone()

        def cfg_function(args):
            return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"] * scale

        patched.set_model_sampler_cfg_function(cfg_function, disable_cfg1_optimization=True)
        patched.set_model_attn1_patch(lambda q, k, v, extra_options: (q, k, v))
        return (patched,)


class LoraFromStateDict:
    """Loads a LoRA file itself and applies it with comfy.sd.load_lora_for_models."""

    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",),
                             "lora_name": (folder_paths.get_filename_list("loras"),),
                             "strength": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "load"
    CATEGORY = "test/packs"

    def load(self, model, clip, lora_name, strength):
        lora = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("loras", lora_name), safe_load=True)
        return comfy.sd.load_lora_for_models(model, clip, lora, strength, strength)


NODE_CLASS_MAPPINGS = {"ScaledGuidance": ScaledGuidance, "LoraFromStateDict": LoraFromStateDict}
