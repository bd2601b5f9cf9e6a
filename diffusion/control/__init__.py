"""Image-conditioned control of the UNet: ControlNets and T2I-Adapters.

- :mod:`diffusion.control.models`: the loaded model (CONTROL_NET) and the control set on a
  conditioning entry, with its residuals per UNet call;
- :mod:`diffusion.control.load`: single files to control models, by shape detection;
- :mod:`diffusion.control.inject`: where the residuals enter a diffusers UNet call;
- :mod:`diffusion.control.synthetic`: seeded random files in the real layouts.
"""
