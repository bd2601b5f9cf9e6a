"""Custom nodes for the worker-pool tests: a node that sleeps, and one that kills its process."""

from __future__ import annotations

import os
import time
from typing import Any


class WorkerSleep:
    """Waits ``seconds`` then passes ``value`` on and shows it (an output node)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        """ComfyUI's input declaration (``after`` orders a chain of sleeps)."""
        return {
            "required": {
                "seconds": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 600.0}),
                "value": ("INT", {"default": 0, "min": -(2**62), "max": 2**62}),
            },
            "optional": {"after": ("INT", {"forceInput": True})},
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "testing"
    OUTPUT_NODE = True

    def run(self, seconds: float, value: int, after: int | None = None) -> dict[str, Any]:
        """Sleep in short steps (a killed process dies promptly), then show ``value``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return {"ui": {"text": [str(value)]}, "result": (value,)}


class WorkerCrash:
    """Ends its own process at once, as an out-of-memory kill would (never returns)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        """ComfyUI's input declaration."""
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "testing"
    OUTPUT_NODE = True

    def run(self, value: int) -> dict[str, Any]:
        """Exit the process without cleanup."""
        os._exit(17)


NODE_CLASS_MAPPINGS = {"WorkerSleep": WorkerSleep, "WorkerCrash": WorkerCrash}
