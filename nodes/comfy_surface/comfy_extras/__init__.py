"""ComfyUI's ``comfy_extras`` package: the ``nodes_*`` modules whose nodes noodlebox has.

Each module gives ComfyUI's classes of that module (see ``core_classes.FUNCTIONS``) made
from the registry's built-in nodes of the same name.
"""

from __future__ import annotations

from .. import missing

__getattr__ = missing("comfy_extras")
