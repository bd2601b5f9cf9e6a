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
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import traceback
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec

from .api import filtered_caller, param_names, resolve_awaitable
from .folders import PT_EXTENSIONS, Folders, UnsafePathError
from .save_paths import save_target

log = logging.getLogger(__name__)

_SECTIONS = ("required", "optional", "hidden")


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
                python_module: str = "custom_nodes") -> NodeSchema:
    """The :class:`NodeSchema` of a V1 node class registered as ``name``."""
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
        behaviour=_behaviour(cls),
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


def _behaviour(cls: type) -> NodeBehaviour:
    function_name = cls.FUNCTION

    def execute(instance: Any, ctx: Any, inputs: dict[str, Any]) -> Any:
        return resolve_awaitable(getattr(instance, function_name)(**inputs))

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


# -- the folder_paths module packs import -------------------------------------------------------


def folder_paths_module(folders: Folders) -> ModuleType:
    """A ``folder_paths`` module over ``folders``: the part of ComfyUI's module that simple packs use.

    Packs typically ``import folder_paths`` to list or resolve model files and to find the
    input/output directories; they get these functions, bound to their registry's folders.
    """
    module = ModuleType("folder_paths", "ComfyUI's folder_paths, answered by a noodlebox Folders object.")
    module.base_path = str(folders.base_dir)
    module.models_dir = str(folders.models_dir)
    module.supported_pt_extensions = set(PT_EXTENSIONS)
    module.folder_names_and_paths = {k: ([str(p) for p in folders.paths(k)], set(folders.extensions(k)))
                                     for k in folders}
    module.get_filename_list = folders.filename_list
    module.get_folder_paths = lambda key: [str(p) for p in folders.paths(key)]
    module.add_model_folder_path = lambda key, path, is_default=False: folders.add_path(key, path, is_default)
    module.get_input_directory = lambda: str(folders.input_dir)
    module.get_output_directory = lambda: str(folders.output_dir)
    module.get_temp_directory = lambda: str(folders.temp_dir)
    module.get_user_directory = lambda: str(folders.user_dir)
    module.get_directory_by_type = lambda kind: str(folders.directory(kind)) if kind in (
        "input", "output", "temp") else None

    def get_full_path(key: str, name: str) -> str | None:
        try:
            found = folders.full_path(key, name)
        except UnsafePathError:
            return None
        return None if found is None else str(found)

    def get_full_path_or_raise(key: str, name: str) -> str:
        found = get_full_path(key, name)
        if found is None:
            raise FileNotFoundError(f"Model in folder '{key}' with filename '{name}' not found.")
        return found

    def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                            image_height: int = 0) -> tuple[str, str, int, str, str]:
        target = save_target(Path(output_dir), filename_prefix, image_width, image_height)
        return str(target.folder), target.filename, target.counter, target.subfolder, filename_prefix

    module.get_full_path = get_full_path
    module.get_full_path_or_raise = get_full_path_or_raise
    module.get_save_image_path = get_save_image_path
    return module


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


def import_pack(path: Path) -> ModuleType:
    """Import one pack afresh as ``custom_nodes.<pack>`` (earlier imports of it are dropped first)."""
    pack = path.stem if path.is_file() else path.name
    module_name = "custom_nodes." + pack.replace(".", "_")
    for loaded in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
        del sys.modules[loaded]
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec, so the package's relative imports resolve
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_custom_nodes(dirs: Sequence[Path], reserved: Collection[str] = (), folders: Folders | None = None) -> PackLoad:
    """Load every pack of ``dirs``; names in ``reserved`` (built-in nodes) are not replaced.

    With ``folders``, ``import folder_paths`` in these packs gets :func:`folder_paths_module` of them.
    """
    result = PackLoad()
    if folders is not None:
        # Packs keep the module object they imported, so each registry's packs see its own folders.
        sys.modules["folder_paths"] = folder_paths_module(folders)
    by_name: dict[str, NodeSchema] = {}
    for directory in dirs:
        for path in find_packs(Path(directory)):
            pack = path.stem if path.is_file() else path.name
            try:
                module = import_pack(path)
            except (Exception, SystemExit) as exc:  # a broken pack must not stop the others
                _fail(result, pack, path, exc)
                continue
            mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
            if not isinstance(mappings, Mapping):
                _fail(result, pack, path, AttributeError("no NODE_CLASS_MAPPINGS"))
                continue
            display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
            for name, cls in mappings.items():
                if name in reserved:
                    log.warning("custom node %s from %s ignored: a built-in node has that name", name, pack)
                    continue
                try:
                    by_name[name] = adapt_class(name, cls, display.get(name), f"custom_nodes.{pack}")
                except Exception as exc:
                    _fail(result, f"{pack}/{name}", path, exc)
            result.loaded.append(pack)
    result.schemas = list(by_name.values())
    return result


def _fail(result: PackLoad, name: str, path: Path, exc: BaseException) -> None:
    log.warning("cannot load custom nodes %s (%s):\n%s", name, path,
                "".join(traceback.format_exception(exc)).rstrip())
    result.failures.append(PackFailure(name, str(path), f"{type(exc).__name__}: {exc}"))
