"""What the loader does with an imported pack module, and how a pack node runs.

- :func:`pack_classes`: the node classes of a pack, V1 (``NODE_CLASS_MAPPINGS``) and V3
  (``comfy_entrypoint()`` -> ``ComfyExtension.get_node_list()``), with display names.
- :func:`web_directory`: the pack's ``WEB_DIRECTORY``, resolved inside its folder.
- :func:`requirements_note`: for an import that failed on a missing package, what the
  pack's ``requirements.txt`` lists (noodlebox never installs anything).
- :func:`run_pack_node`: runs one call of a pack node with ComfyUI's values, the run
  state the surface modules read, stdout sent to the log, and errors naming the pack.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from graph.schema import ExecutionInterrupted

from . import ALIASED, RENAMED, guard, runtime
from .values import unwrap, wrap


class PackNodeError(RuntimeError):
    """A pack node failed with an error whose message cannot be extended: it names the pack, ``comfy_type``
    is the original error's type (most errors keep their type, their message gets the pack's name)."""

    def __init__(self, pack: str, exc: BaseException) -> None:
        super().__init__(f"{exc} [custom node pack {pack}]")
        self.pack = pack
        self.comfy_type = type(exc).__name__ if type(exc).__module__ == "builtins" else (
            f"{type(exc).__module__}.{type(exc).__qualname__}")


def pack_classes(module: ModuleType) -> tuple[dict[str, type], dict[str, str]]:
    """``(classes by node name, display names)`` of an imported pack (V1 mappings, then V3 nodes)."""
    from ..declaration import resolve_awaitable

    classes: dict[str, type] = {}
    display: dict[str, str] = {}
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if mappings is None and entrypoint is None:
        raise AttributeError("no NODE_CLASS_MAPPINGS and no comfy_entrypoint")
    if mappings is not None:
        if not isinstance(mappings, Mapping):
            raise TypeError(f"NODE_CLASS_MAPPINGS is a {type(mappings).__name__}, not a dict")
        classes.update(mappings)
        display.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    if entrypoint is not None:
        from .comfy_api.latest.v3 import to_v1_class

        extension = resolve_awaitable(entrypoint())
        resolve_awaitable(extension.on_load())
        for node in resolve_awaitable(extension.get_node_list()):
            node_id, cls, name = to_v1_class(node)
            classes[node_id] = cls
            if name:
                display[node_id] = name
    return classes, display


def web_directory(module: ModuleType, path: Path) -> Path | None:
    """The pack's ``WEB_DIRECTORY`` as a folder inside the pack, or None (absent, missing or outside)."""
    value = getattr(module, "WEB_DIRECTORY", None)
    if not isinstance(value, str):
        return None
    base = (path if path.is_dir() else path.parent).resolve()
    folder = (base / value).resolve()
    if folder != base and base not in folder.parents:
        return None
    return folder if folder.is_dir() else None


def requirements_note(path: Path, exc: BaseException) -> str:
    """Advice for a missing package: what the pack's requirements.txt asks for ('' if not applicable)."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return ""
    top = exc.name.partition(".")[0]
    if top in ALIASED or top in RENAMED or top == "custom_nodes":
        return ""
    requirements = (path if path.is_dir() else path.parent) / "requirements.txt"
    if not path.is_dir() or not requirements.is_file():
        return f" (package {top!r} is not installed; noodlebox does not install pack requirements)"
    wanted = []
    for line in requirements.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            wanted.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0])
    return (f" (package {top!r} is not installed; the pack's requirements.txt lists: {', '.join(wanted)}; "
            "noodlebox does not install pack requirements: install them into its environment yourself)")


def _wrap_input(value: Any) -> Any:
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return wrap(value)


def _unwrap_result(result: Any) -> Any:
    if isinstance(result, tuple):
        return tuple(unwrap(v) for v in result)
    if isinstance(result, list):
        return [unwrap(v) for v in result]
    if isinstance(result, dict) and "result" in result:
        return {**result, "result": tuple(unwrap(v) for v in result["result"])}
    return result


def run_pack_node(pack: str, ctx: Any, call: Callable[[dict[str, Any]], Any], inputs: Mapping[str, Any],
                  builtins: Mapping[str, Any] | None = None) -> Any:
    """Run ``call`` (one call of a pack node) with wrapped values; errors name the pack.

    ``builtins`` (the pack's registry) answer ComfyUI's core classes meanwhile.
    """
    from ..declaration import resolve_awaitable

    values = {k: _wrap_input(v) for k, v in inputs.items()}
    try:
        with runtime.running(ctx, pack, builtins), guard.captured_stdout(pack):
            return _unwrap_result(resolve_awaitable(call(values)))
    except ExecutionInterrupted:
        raise
    except Exception as exc:
        if not _name_pack(exc, pack):
            raise PackNodeError(pack, exc) from exc
        raise


def _name_pack(exc: BaseException, pack: str) -> bool:
    """Add ``[custom node pack X]`` to the message of ``exc`` in place (type kept); False if it cannot be."""
    suffix = f" [custom node pack {pack}]"
    if isinstance(exc, OSError) and exc.strerror:
        exc.strerror += suffix
        return True
    if exc.args and isinstance(exc.args[0], str) and str(exc) == exc.args[0]:
        exc.args = (exc.args[0] + suffix, *exc.args[1:])
        return True
    return False
