"""A pack that imports a ComfyUI module noodlebox does not provide."""

from comfy.ldm.modules import attention  # noqa: F401

NODE_CLASS_MAPPINGS = {}
