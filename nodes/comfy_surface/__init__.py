"""ComfyUI's module surface, answered by noodlebox, for custom node packs.

Packs import ComfyUI's modules by their top-level names: ``nodes``, ``server``,
``comfy.*``, ``comfy_extras.*``, ``comfy_api.latest``, ``execution``,
``latent_preview``, ``node_helpers`` and ``folder_paths``. The modules of this package
answer those names (``nodes.comfy_surface.comfy.utils`` is ComfyUI's ``comfy.utils``).

How a pack reaches them (see :mod:`nodes.comfy_surface.loader`):

- ``nodes`` and ``server`` are also noodlebox's own packages, so they are never put in
  ``sys.modules`` under those names. Instead every module loaded from a pack folder is
  executed with its own ``__builtins__`` whose ``__import__`` maps exactly these two
  names onto :mod:`nodes.comfy_surface.nodes` and :mod:`nodes.comfy_surface.server`.
  Functions keep the builtins of the module they were defined in, so imports made later,
  at run time, resolve the same way. Noodlebox's own code never sees the mapping.
- The other names collide with nothing of ours: a meta-path finder makes
  ``comfy.utils`` (and so on) an alias of the module here, for packs and for any
  library they use, including ``importlib.import_module("comfy.utils")``.

Whatever is not provided raises: an unknown module is a ``ModuleNotFoundError`` and an
unknown attribute an ``AttributeError``, both naming the ComfyUI name asked for
(:func:`missing`). Nothing is a silent stub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ComfyUI names that are answered by an alias in ``sys.modules`` (no clash with our packages).
ALIASED = ("comfy", "comfy_extras", "comfy_api", "comfy_execution", "execution", "latent_preview", "node_helpers")
#: ComfyUI names that clash with noodlebox packages: mapped only inside pack modules.
RENAMED = ("nodes", "server")


class NotProvidedError(AttributeError):
    """A pack asked for a ComfyUI attribute this surface does not provide."""


def missing(module: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for the surface module of ComfyUI's ``module``.

    It raises :class:`NotProvidedError` (an AttributeError) naming ``module.name``.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807  (the module hook PEP 562 names)
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotProvidedError(f"noodlebox does not provide ComfyUI's {module}.{name}")

    return __getattr__
