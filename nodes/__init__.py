"""The node API, the registry, ComfyUI custom-node compatibility and the built-in nodes."""
