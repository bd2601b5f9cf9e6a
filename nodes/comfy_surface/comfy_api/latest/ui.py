"""ComfyUI's ``comfy_api.latest.ui``: results a V3 node shows in the editor (``NodeOutput(ui=...)``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import missing, runtime

__getattr__ = missing("comfy_api.latest.ui")


class _UIOutput:
    """A ``ui`` value: :meth:`as_dict` is the node's ``ui`` dict in history and the ``executed`` event."""

    def as_dict(self) -> dict[str, Any]:
        """The ``ui`` dict."""
        raise NotImplementedError


@dataclass
class SavedResult:
    """A file a node wrote: name, subfolder and folder type (``output``/``temp``/``input``)."""

    filename: str
    subfolder: str
    type: Any

    def as_dict(self) -> dict[str, Any]:
        """The editor's image/file reference."""
        kind = getattr(self.type, "value", self.type)
        return {"filename": self.filename, "subfolder": self.subfolder, "type": kind}


class PreviewText(_UIOutput):
    """Text shown on the node."""

    def __init__(self, value: str, **kwargs: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        """``{"text": [value]}``."""
        return {"text": [self.value]}


class PreviewImage(_UIOutput):
    """Images shown on the node (written to the temp folder by our PreviewImage node)."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        self.image = image
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        """``{"images": [...], "animated": [...]}``."""
        result = runtime.call_builtin("PreviewImage", {"images": self.image})
        ui = dict(result.get("ui") or {}) if isinstance(result, dict) else {}
        ui["animated"] = [self.animated]
        return ui


class PreviewMask(PreviewImage):
    """A mask shown on the node, as a grey image."""

    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        image = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(image, animated, cls)

