"""ComfyUI's ``comfy_extras.nodes_model_advanced``: its node classes that noodlebox has (made on first use)."""

from __future__ import annotations

from typing import Any

from .. import core_classes


def __getattr__(name: str) -> Any:
    """ComfyUI's class ``comfy_extras.nodes_model_advanced.<name>``, or an AttributeError naming it."""
    if name.startswith("__"):
        raise AttributeError(name)
    return core_classes.core_class("comfy_extras.nodes_model_advanced", name)
