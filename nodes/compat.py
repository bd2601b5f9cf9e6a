"""ComfyUI V1 node classes (custom node packs) as :class:`graph.schema.NodeSchema`.

A pack is a single ``.py`` module or a package (a folder with ``__init__.py``) in a
``custom_nodes/`` directory, exporting ``NODE_CLASS_MAPPINGS`` (and optionally
``NODE_DISPLAY_NAME_MAPPINGS``). Each class is read the way ComfyUI reads it:
``INPUT_TYPES``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``FUNCTION`` (may be ``async``),
``CATEGORY``, ``OUTPUT_NODE``, ``INPUT_IS_LIST``, ``OUTPUT_IS_LIST``, ``IS_CHANGED``,
``VALIDATE_INPUTS``, ``check_lazy_status``, ``DESCRIPTION``, ``OUTPUT_TOOLTIPS``,
``NOT_IDEMPOTENT``, ``DEPRECATED``, ``EXPERIMENTAL``.

Packs are imported as ``custom_nodes.<pack>`` (their ``python_module``), afresh for
every registry. A pack that fails to import, or a class that cannot be read, is
logged with its error, recorded as a :class:`PackFailure`, and skipped; loading goes on.
As in ComfyUI, a custom class cannot replace a built-in node of the same name. Packs
that ``import folder_paths`` get :func:`folder_paths_module`, bound to the registry's folders.

V3 packs (``comfy_entrypoint()``, ``comfy_api.latest.io``) are read too. The ComfyUI
modules packs import (``nodes``, ``server``, ``comfy.*``...) are answered by
:mod:`nodes.comfy_surface` (its docstring says how, without touching our own ``nodes``
and ``server`` packages). Pack nodes run with ComfyUI's MODEL/CLIP/VAE objects
(:mod:`nodes.comfy_surface.values`), and an error they raise names the pack.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec

from .api import filtered_caller, param_names, resolve_awaitable
from .comfy_surface.folder_paths import folder_paths_module
from .comfy_surface.guard import ImportTimeout, captured_stdout, deadline, no_writes_outside
from .comfy_surface.loader import custom_nodes_package, import_pack_module
from .comfy_surface.loader import install as install_surface
from .comfy_surface.packs import pack_classes, requirements_note, run_pack_node, web_directory
from .folders import Folders

log = logging.getLogger(__name__)

_SECTIONS = ("required", "optional", "hidden")
#: Seconds a pack may take to import.
IMPORT_TIMEOUT_S = 60.0

__all__ = ["IMPORT_TIMEOUT_S", "PackFailure", "PackLoad", "adapt_class", "find_packs", "folder_paths_module",
           "import_pack", "load_custom_nodes", "parse_input_types"]


@dataclass(frozen=True)
class PackFailure:
    """A custom node pack (or one class of it: ``pack/Class``) that could not be loaded."""

    name: str
    path: str
    error: str


@dataclass
class PackLoad:
    """What loading custom node directories produced."""

    schemas: list[NodeSchema] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    failures: list[PackFailure] = field(default_factory=list)
    #: Pack name -> its web directory (``WEB_DIRECTORY``), served at ``/extensions/<pack>/``.
    web_dirs: dict[str, Path] = field(default_factory=dict)
    #: The aiohttp routes packs added through ``PromptServer.instance.routes``.
    routes: list[Any] = field(default_factory=list)
    #: Pack name -> its folder (package packs only: example workflows live there).
    pack_dirs: dict[str, Path] = field(default_factory=dict)


def parse_input_types(raw: Mapping[str, Any]) -> tuple[InputSpec, ...]:
    """The InputSpecs of an ``INPUT_TYPES()`` dict (sections in order, names in dict order)."""
    specs: list[InputSpec] = []
    for section in _SECTIONS:
        entries = raw.get(section) or {}
        for name, entry in entries.items():
            specs.append(_parse_entry(name, entry, section))
    return tuple(specs)


def _parse_entry(name: str, entry: Any, section: str) -> InputSpec:
    if section == "hidden":
        kind = entry[0] if isinstance(entry, list | tuple) else entry
        return InputSpec(name, kind, "hidden")
    if isinstance(entry, str):  # the editor accepts a bare type string
        entry = (entry,)
    type_ = entry[0]
    options = dict(entry[1]) if len(entry) > 1 and entry[1] else {}
    if isinstance(type_, list | tuple):
        return InputSpec(name, "COMBO", section, options, choices=tuple(type_))
    if type_ == "COMBO":
        return InputSpec(name, "COMBO", section, options, legacy_combo=False)
    # The type object is kept as given: packs use str subclasses with a custom __ne__ as "any".
    return InputSpec(name, type_, section, options)


def adapt_class(name: str, cls: type, display_name: str | None = None,
                python_module: str = "custom_nodes", builtins: Mapping[str, NodeSchema] | None = None) -> NodeSchema:
    """The :class:`NodeSchema` of a V1 node class registered as ``name``.

    For a pack's class (``python_module`` ``custom_nodes.<pack>``) calls run through
    :func:`~nodes.comfy_surface.packs.run_pack_node`, with ``builtins`` (its registry's
    built-in nodes) behind ComfyUI's core classes.
    """
    inputs = parse_input_types(cls.INPUT_TYPES())
    return_types = list(getattr(cls, "RETURN_TYPES", ()))
    names = list(getattr(cls, "RETURN_NAMES", None) or return_types)
    is_list = list(getattr(cls, "OUTPUT_IS_LIST", None) or [False] * len(return_types))
    tooltips = list(getattr(cls, "OUTPUT_TOOLTIPS", None) or [None] * len(return_types))
    outputs = tuple(
        OutputSpec(t, names[i] if i < len(names) else t, bool(is_list[i]) if i < len(is_list) else False,
                   tooltips[i] if i < len(tooltips) else None)
        for i, t in enumerate(return_types)
    )
    return NodeSchema(
        name=name,
        inputs=inputs,
        outputs=outputs,
        behaviour=_behaviour(cls, python_module.removeprefix("custom_nodes.") if python_module.startswith(
            "custom_nodes.") else None, builtins),
        display_name=display_name or "",
        category=getattr(cls, "CATEGORY", "sd"),
        description=getattr(cls, "DESCRIPTION", "") or "",
        output_node=getattr(cls, "OUTPUT_NODE", False) is True,
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        python_module=python_module,
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        # ComfyUI calls INPUT_TYPES() whenever it needs the inputs; file lists in it change.
        dynamic_inputs=lambda: parse_input_types(cls.INPUT_TYPES()),
    )


def _behaviour(cls: type, pack: str | None = None, builtins: Mapping[str, NodeSchema] | None = None) -> NodeBehaviour:
    function_name = cls.FUNCTION

    def execute(instance: Any, ctx: Any, inputs: dict[str, Any]) -> Any:
        if pack is None:
            return resolve_awaitable(getattr(instance, function_name)(**inputs))
        return run_pack_node(pack, ctx, lambda values: getattr(instance, function_name)(**values), inputs,
                             builtins)

    fingerprint = validate = check_lazy = None
    validate_params: frozenset[str] | None = frozenset()
    wants_types = False
    if hasattr(cls, "IS_CHANGED"):
        fingerprint = filtered_caller(cls.IS_CHANGED)
    if hasattr(cls, "VALIDATE_INPUTS"):
        validate = filtered_caller(cls.VALIDATE_INPUTS)
        names = param_names(cls.VALIDATE_INPUTS)
        wants_types = names is not None and "input_types" in names
        validate_params = None if names is None else names - {"input_types"}
    if hasattr(cls, "check_lazy_status"):

        lazy_names = param_names(cls.check_lazy_status)  # read once; called on each instance

        def check_lazy(instance: Any, inputs: dict[str, Any]) -> list[str]:
            kwargs = inputs if lazy_names is None else {k: v for k, v in inputs.items() if k in lazy_names}
            return list(resolve_awaitable(instance.check_lazy_status(**kwargs)) or ())

    return NodeBehaviour(
        execute=execute, new_instance=cls, fingerprint=fingerprint, validate=validate,
        validate_params=validate_params, validate_wants_input_types=wants_types, check_lazy=check_lazy,
    )


# -- loading packs from disk -------------------------------------------------------------------


def find_packs(directory: Path) -> list[Path]:
    """The packs in a ``custom_nodes/`` directory, sorted: ``*.py`` files and folders with ``__init__.py``.

    Hidden names, ``__pycache__``-like names and ``*.disabled`` entries are skipped.
    """
    if not directory.is_dir():
        return []
    packs = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.name.startswith((".", "__")) or entry.name.endswith(".disabled"):
            continue
        if (entry.is_file() and entry.suffix == ".py") or (entry.is_dir() and (entry / "__init__.py").is_file()):
            packs.append(entry)
    return packs


def pack_name(path: Path) -> str:
    """A pack's name: its file stem or folder name."""
    return path.stem if path.is_file() else path.name


def import_pack(path: Path) -> ModuleType:
    """Import one pack afresh as ``custom_nodes.<pack>``, its modules seeing ComfyUI's names."""
    return import_pack_module(path.resolve(), "custom_nodes." + pack_name(path).replace(".", "_"))


def load_custom_nodes(dirs: Sequence[Path], reserved: Collection[str] = (), folders: Folders | None = None,
                      builtins: Mapping[str, NodeSchema] | None = None,
                      import_timeout: float | None = None) -> PackLoad:
    """Load every pack of ``dirs``; names in ``reserved`` (built-in nodes) are not replaced.

    ``builtins`` (the registry's built-in nodes) back ComfyUI's core classes in
    ``nodes``/``comfy_extras``; with ``folders``, ``import folder_paths`` gets a module
    over them. Each pack imports under :mod:`nodes.comfy_surface.guard`'s guards (time
    limit, no writes outside its folder and ``folders``' directories, stdout to the log).
    ``import_timeout`` defaults to :data:`IMPORT_TIMEOUT_S` as it is at the call.
    """
    from .comfy_surface import nodes as comfy_nodes
    from .comfy_surface import runtime
    from .comfy_surface.server import PromptServer

    result = PackLoad()
    dirs = [Path(d) for d in dirs]
    install_surface(dirs)
    custom_nodes_package(dirs)
    if builtins is not None:
        runtime.activate(builtins)
        comfy_nodes.refresh()
    if folders is not None:
        # Packs keep the module object they imported, so each registry's packs see its own folders.
        sys.modules["folder_paths"] = folder_paths_module(folders)
    PromptServer.instance.reset_routes()
    by_name: dict[str, NodeSchema] = {}
    for directory in dirs:
        for path in find_packs(directory):
            pack = pack_name(path)
            module = _import_guarded(result, pack, path, folders,
                                     IMPORT_TIMEOUT_S if import_timeout is None else import_timeout)
            if module is None:
                continue
            try:
                classes, display = pack_classes(module)
            except Exception as exc:
                _fail(result, pack, path, exc)
                continue
            for name, cls in classes.items():
                if name in reserved:
                    log.warning("custom node %s from %s ignored: a built-in node has that name", name, pack)
                    continue
                try:
                    by_name[name] = adapt_class(name, cls, display.get(name), f"custom_nodes.{pack}", builtins)
                except Exception as exc:
                    _fail(result, f"{pack}/{name}", path, exc)
                    continue
                comfy_nodes.NODE_CLASS_MAPPINGS[name] = cls
                if name in display:
                    comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS[name] = display[name]
            web = web_directory(module, path)
            if web is not None:
                result.web_dirs[pack] = web
                comfy_nodes.EXTENSION_WEB_DIRS[pack] = str(web)
            if path.is_dir():
                result.pack_dirs[pack] = path.resolve()
            result.loaded.append(pack)
    result.schemas = list(by_name.values())
    result.routes = list(PromptServer.instance.routes)
    return result


def _import_guarded(result: PackLoad, pack: str, path: Path, folders: Folders | None,
                    timeout: float) -> ModuleType | None:
    """Import a pack under the guards; a failure is recorded (with requirements advice) and gives None."""
    allowed = [path if path.is_dir() else path.parent, Path(tempfile.gettempdir())]
    if folders is not None:
        allowed += [folders.models_dir, folders.input_dir, folders.output_dir, folders.temp_dir, folders.user_dir]
    refused: list[str] = []
    try:
        with captured_stdout(pack), no_writes_outside(allowed, refused), deadline(timeout, path.resolve()):
            return import_pack(path)
    except (Exception, SystemExit, ImportTimeout) as exc:  # a broken pack must not stop the others
        _fail(result, pack, path, exc, requirements_note(path, exc))
        return None
    finally:
        for target in refused:
            log.warning("custom node pack %s tried to write outside its folder: %s", pack, target)
            result.failures.append(PackFailure(f"{pack}/write", str(path), f"refused write outside its folder: "
                                                                            f"{target}"))


def _fail(result: PackLoad, name: str, path: Path, exc: BaseException, note: str = "") -> None:
    log.warning("cannot load custom nodes %s (%s)%s:\n%s", name, path, note,
                "".join(traceback.format_exception(exc)).rstrip())
    result.failures.append(PackFailure(name, str(path), f"{type(exc).__name__}: {exc}{note}"))
