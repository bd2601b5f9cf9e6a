"""A tiny ComfyUI-style custom node pack for the server tests: a node that sleeps."""

from __future__ import annotations

import time
from typing import Any


class NoodleSleep:
    """Waits ``seconds`` then passes ``value`` on and shows it (an output node)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        """ComfyUI's input declaration."""
        return {
            "required": {
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 600.0}),
                "value": ("INT", {"default": 0, "min": -(2**62), "max": 2**62}),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "testing"
    OUTPUT_NODE = True

    def run(self, seconds: float, value: int) -> dict[str, Any]:
        """Sleep in short steps (so a killed process dies promptly), then show ``value``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return {"ui": {"text": [str(value)]}, "result": (value,)}


NODE_CLASS_MAPPINGS = {"NoodleSleep": NoodleSleep}
NODE_DISPLAY_NAME_MAPPINGS = {"NoodleSleep": "Sleep (test)"}
