import comfy.samplers
import nodes

from .lib.steps import halve


class HalfStepKSampler(nodes.KSampler):
    """The core KSampler with half the steps: subclassed, inputs inherited."""

    CATEGORY = "test/packs"

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
               denoise=1.0):
        return super().sample(model, seed, halve(steps), cfg, sampler_name, scheduler, positive, negative,
                              latent_image, denoise=denoise)


class CommonKSamplerNode:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
            "steps": ("INT", {"default": 2, "min": 1, "max": nodes.MAX_RESOLUTION}),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "latent": ("LATENT",),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "go"
    CATEGORY = "test/packs"

    def go(self, model, seed, steps, sampler_name, scheduler, positive, negative, latent):
        return nodes.common_ksampler(model, seed, steps, 5.0, sampler_name, scheduler, positive, negative, latent)


class EncodeTwice:
    """Calls core node classes directly, with ComfyUI's method names and argument order."""

    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"clip": ("CLIP",), "text": ("STRING", {"default": "a red square"})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "test/packs"

    def encode(self, clip, text):
        first = nodes.CLIPTextEncode().encode(clip, text)[0]
        second = nodes.CLIPTextEncode().encode(clip, text + ", blue")[0]
        return nodes.ConditioningCombine().combine(first, second)


NODE_CLASS_MAPPINGS = {"HalfStepKSampler": HalfStepKSampler, "CommonKSamplerNode": CommonKSamplerNode,
                       "EncodeTwice": EncodeTwice}
NODE_DISPLAY_NAME_MAPPINGS = {"HalfStepKSampler": "KSampler (half steps)"}
