"""A pack that uses the twenty most-used ComfyUI names of the measured list (and the next five)."""

import os

import comfy
import torch
import comfy.model_management
import comfy.samplers
import comfy.sd
import comfy.utils
import folder_paths
import nodes
import server
from server import PromptServer

assert comfy.samplers.KSampler.SAMPLERS and comfy.samplers.KSampler.SCHEDULERS
routes = PromptServer.instance.routes  # used at import, as packs do
LORA_LOADER = getattr(nodes, "LoraLoader", None) if "LoraLoader" in nodes.NODE_CLASS_MAPPINGS else None


class CheckpointReport:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {
            "ckpt_name": (folder_paths.get_filename_list("checkpoints"),),
            "sampler_name": (comfy.samplers.KSampler.SAMPLERS,),
            "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
            "size": ("INT", {"default": 16, "min": 8, "max": nodes.MAX_RESOLUTION}),
        }}

    RETURN_TYPES = ("STRING", "CONDITIONING", "IMAGE")
    FUNCTION = "report"
    CATEGORY = "test/packs"

    def report(self, ckpt_name, sampler_name, scheduler, size):
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        assert path in [os.path.join(d, ckpt_name) for d in folder_paths.get_folder_paths("checkpoints")]
        device = comfy.model_management.get_torch_device()
        bar = comfy.utils.ProgressBar(3)
        keys = len(comfy.utils.load_torch_file(path))
        bar.update(1)
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path)
        bar.update(1)
        (cond,) = nodes.CLIPTextEncode().encode(clip, "a red square")
        latent = comfy.utils.common_upscale(torch.ones(1, 4, 1, 1), size // 8, size // 8, "nearest-exact", "disabled")
        image = vae.decode(latent)
        bar.update(1)
        scratch = os.path.join(folder_paths.get_temp_directory(), "top_names_pack.txt")
        os.makedirs(os.path.dirname(scratch), exist_ok=True)
        with open(scratch, "w") as f:
            f.write(str(keys))
        text = f"{keys} keys on {device.type}; {type(model).__name__}; {sampler_name}/{scheduler}; " \
               f"{server.PromptServer.instance is PromptServer.instance}"
        return (text, cond, image)


NODE_CLASS_MAPPINGS = {"CheckpointReport": CheckpointReport}
