"""A package pack whose nodes build on ComfyUI's core sampler (test data for nodes.comfy_surface)."""

from .sampler_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
