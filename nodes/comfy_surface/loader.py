"""How pack modules are imported so that ComfyUI's names resolve to :mod:`nodes.comfy_surface`.

Two meta-path finders, installed once by :func:`install`:

- :class:`AliasFinder` answers ``comfy``, ``comfy_extras``, ``comfy_api``, ... (see
  :data:`nodes.comfy_surface.ALIASED`) with the modules of this package: the module object
  is the same under both names.
- :class:`PackFinder` finds modules whose file lies under a registered pack root (a
  ``custom_nodes`` directory) and loads them with :class:`PackLoader`, which runs the
  module with :data:`PACK_BUILTINS`. Its ``__import__`` maps ``nodes`` and ``server`` to
  the surface modules; everything else is imported normally.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import ALIASED, RENAMED

SURFACE = __name__.rpartition(".")[0]
_lock = threading.Lock()
_roots: list[Path] = []


def surface_name(name: str) -> str:
    """The module of this package that answers ComfyUI's module ``name``."""
    return f"{SURFACE}.{name}"


def _not_provided(name: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"noodlebox does not provide ComfyUI's module {name!r}", name=name)


def _import_surface(name: str) -> ModuleType:
    """Import the surface module for ComfyUI's ``name``, or raise a ModuleNotFoundError naming ``name``."""
    target = surface_name(name)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
            raise _not_provided(name) from None
        raise


def pack_import(name: str, globals: Any = None, locals: Any = None, fromlist: Sequence[str] | None = (),
                level: int = 0) -> ModuleType:
    """``__import__`` of pack modules: ``nodes``/``server`` are ComfyUI's, the rest as usual."""
    if level == 0:
        top = name.partition(".")[0]
        if top in RENAMED:
            if name != top:  # ComfyUI's nodes and server have no submodules
                raise _not_provided(name)
            return _import_surface(top)
    return builtins.__import__(name, globals, locals, fromlist, level)


#: The builtins pack modules run with: the real ones, with :func:`pack_import` as ``__import__``.
PACK_BUILTINS: dict[str, Any] = {**vars(builtins), "__import__": pack_import}


class PackLoader(importlib.machinery.SourceFileLoader):
    """A source loader that runs the module with :data:`PACK_BUILTINS`."""

    def exec_module(self, module: ModuleType) -> None:
        """Execute the module's code in its namespace, with the pack builtins in place first."""
        module.__dict__["__builtins__"] = PACK_BUILTINS
        super().exec_module(module)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, module: ModuleType) -> None:
        self.module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self.module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the surface module is already imported."""


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ComfyUI's ``comfy.*``, ``comfy_extras.*``... as the modules of this package."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """A spec whose loader hands over the surface module (or ModuleNotFoundError naming it)."""
        if fullname.partition(".")[0] not in ALIASED:
            return None
        module = _import_surface(fullname)
        is_package = hasattr(module, "__path__")
        spec = importlib.util.spec_from_loader(fullname, _AliasLoader(module), is_package=is_package)
        if spec is not None and is_package:
            spec.submodule_search_locations = list(module.__path__)
        return spec


class PackFinder(importlib.abc.MetaPathFinder):
    """Finds Python source modules that lie under a pack root and loads them with :class:`PackLoader`."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """The path finder's spec with a :class:`PackLoader` when its file is under a pack root."""
        if not _roots or fullname.partition(".")[0] in ALIASED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.origin is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        if not under_roots(Path(spec.origin)):
            return None
        spec.loader = PackLoader(fullname, spec.origin)
        return spec


def under_roots(path: Path) -> bool:
    """Whether ``path`` lies in a registered pack root."""
    resolved = path.resolve()
    return any(root == resolved or root in resolved.parents for root in _roots)


def install(roots: Sequence[Path] = ()) -> None:
    """Put the two finders first on ``sys.meta_path`` (once) and register pack ``roots``."""
    with _lock:
        if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, PackFinder())
            sys.meta_path.insert(0, AliasFinder())
        for root in roots:
            resolved = Path(root).resolve()
            if resolved not in _roots:
                _roots.append(resolved)


def custom_nodes_package(dirs: Sequence[Path]) -> ModuleType:
    """The ``custom_nodes`` namespace package (ComfyUI's), over ``dirs``; registered in ``sys.modules``."""
    package = sys.modules.get("custom_nodes")
    if package is None or not hasattr(package, "__path__"):
        package = ModuleType("custom_nodes", "ComfyUI's custom_nodes package: the packs noodlebox loaded.")
        package.__path__ = []
        package.__package__ = "custom_nodes"
        package.__spec__ = importlib.machinery.ModuleSpec("custom_nodes", None, is_package=True)
        package.__spec__.submodule_search_locations = package.__path__
        sys.modules["custom_nodes"] = package
    for directory in dirs:
        entry = str(Path(directory).resolve())
        if entry not in package.__path__:
            package.__path__.append(entry)
    return package


def import_pack_module(path: Path, module_name: str) -> ModuleType:
    """Import the pack at ``path`` (a ``.py`` file or a package folder) afresh as ``module_name``."""
    install([path.parent])
    custom_nodes_package([path.parent])
    for loaded in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[loaded]
    origin = path / "__init__.py" if path.is_dir() else path
    loader = PackLoader(module_name, str(origin))
    spec = importlib.util.spec_from_file_location(
        module_name, origin, loader=loader,
        submodule_search_locations=[str(path)] if path.is_dir() else None)
    if spec is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec, so the package's relative imports resolve
    try:
        loader.exec_module(module)
    except BaseException:
        for loaded in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
            del sys.modules[loaded]
        raise
    parent = sys.modules.get("custom_nodes")
    if parent is not None:
        setattr(parent, module_name.rpartition(".")[2], module)
    return module
