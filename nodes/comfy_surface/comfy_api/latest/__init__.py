"""ComfyUI's ``comfy_api.latest``: ``io`` (V3 node schema), ``ui`` (node results shown in the editor),
``ComfyExtension`` (what a V3 pack's ``comfy_entrypoint()`` returns). :mod:`.v3` turns a
``ComfyNode`` into a node noodlebox runs.
"""

from __future__ import annotations

from ... import missing
from . import io, ui

__all__ = ["ComfyExtension", "io", "ui"]
__getattr__ = missing("comfy_api.latest")


class ComfyExtension:
    """A V3 pack's extension object: ``get_node_list()`` gives its node classes."""

    async def on_load(self) -> None:
        """Called once before the node list is asked for."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The pack's ``io.ComfyNode`` subclasses."""
        return []
