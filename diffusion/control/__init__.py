"""Image-conditioned models: ControlNets and T2I-Adapters, CLIP vision encoders, inpainting-model inputs.

- :mod:`diffusion.control.models`: the loaded control model (CONTROL_NET) and the control set
  on a conditioning entry, with its residuals per UNet call;
- :mod:`diffusion.control.load`: single files to control models, by shape detection;
- :mod:`diffusion.control.inject`: where the residuals enter a diffusers UNet call;
- :mod:`diffusion.control.clip_vision`: CLIP image encoders and ComfyUI's preprocessing;
- :mod:`diffusion.control.inpaint`: the masked-image inputs of 9-channel inpainting UNets;
- :mod:`diffusion.control.synthetic`: seeded random files in the real layouts.
"""
