"""Building a registry: the built-in node modules plus custom node packs, bound to one set of services.

A built-in node module declares its nodes with :func:`nodes.api.node` at module level;
:func:`declarations` collects every :class:`~nodes.api.NodeDecl` defined in it, in
definition order (declarations imported from elsewhere are not counted twice).
Modules listed in :data:`BUILTIN_MODULES` that are not written yet are skipped; any
other import error in them is a bug and propagates.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from graph.schema import Registry

from .api import NodeDecl, Services
from .compat import PackFailure, load_custom_nodes
from .folders import Folders

log = logging.getLogger(__name__)

#: Built-in node modules, in registration order.
BUILTIN_MODULES: tuple[str, ...] = (
    "nodes.primitives",
    "nodes.loaders",
    "nodes.conditioning",
    "nodes.sampling",
    "nodes.latent",
    "nodes.vae",
    "nodes.image",
    "nodes.mask",
    # Node families still being written: a module that does not exist yet is skipped.
    "nodes.lora",
    "nodes.model_loaders",
    "nodes.hooks",
    "nodes.merge",
    "nodes.model_save",
    "nodes.train",
    "nodes.image_edit",
    "nodes.image_files",
    "nodes.mask_edit",
    "nodes.strings",
    "nodes.latent_tools",
    "nodes.conditioning_tools",
    "nodes.upscale",
    "nodes.websocket_image",
    "nodes.custom_sampling",
    "nodes.model_sampling",
    "nodes.guidance",
    "nodes.unet_patches",
    "nodes.attention_patches",
    "nodes.controlnet",
    "nodes.clip_vision",
    "nodes.model_kinds",
    "nodes.gligen",
    "nodes.image_models",
    "nodes.image_only",
    "nodes.unclip",
    "nodes.sd3",
    "nodes.flux",
    "nodes.skip_layer",
    "nodes.photomaker",
)


class NodeRegistry(Registry):
    """A :class:`graph.schema.Registry` that also keeps its services and the custom-pack load report."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        #: Custom node packs (or classes, ``pack/Class``) that failed to load.
        self.load_report: list[PackFailure] = []
        #: Custom node packs that imported.
        self.custom_packs: list[str] = []
        #: Pack name -> its web directory (``WEB_DIRECTORY``).
        self.web_dirs: dict[str, Path] = {}
        #: aiohttp routes packs added through ``PromptServer.instance.routes``.
        self.pack_routes: list[object] = []
        #: Pack name -> its folder (package packs).
        self.pack_dirs: dict[str, Path] = {}


def declarations(module: ModuleType) -> list[NodeDecl]:
    """The node declarations defined in ``module``, in definition order."""
    return [v for v in vars(module).values() if isinstance(v, NodeDecl) and v.module == module.__name__]


def builtin_modules(names: Iterable[str] = BUILTIN_MODULES) -> list[ModuleType]:
    """Import the built-in node modules that exist (a missing module is skipped, other errors raise)."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.debug("node module %s not present; skipped", name)
    return modules


def build_registry(services: Services | None = None, custom_nodes_dirs: Sequence[Path] = ()) -> NodeRegistry:
    """A fresh registry of every built-in node and the custom packs of ``custom_nodes_dirs``.

    ``services`` defaults to :class:`~nodes.folders.Folders` of the current directory.
    Failed packs are in ``registry.load_report``; they never stop the build.
    """
    services = services or Services(folders=Folders(Path.cwd()))
    registry = NodeRegistry(services)
    for module in builtin_modules():
        for decl in declarations(module):
            registry.add(decl.schema(services))
    if custom_nodes_dirs:
        loaded = load_custom_nodes([Path(d) for d in custom_nodes_dirs], reserved=frozenset(registry),
                                   folders=services.folders, builtins=registry)
        for schema in loaded.schemas:
            registry.add(schema)
        registry.load_report = loaded.failures
        registry.custom_packs = loaded.loaded
        registry.web_dirs = loaded.web_dirs
        registry.pack_routes = loaded.routes
        registry.pack_dirs = loaded.pack_dirs
    return registry
