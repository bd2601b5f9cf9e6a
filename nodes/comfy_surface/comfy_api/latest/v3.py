"""V3 nodes (``io.ComfyNode`` subclasses) in the class form the pack loader reads (V1).

:func:`to_v1_class` builds, from a node's :class:`~.io.Schema`, a class with
``INPUT_TYPES``, ``RETURN_TYPES``/``RETURN_NAMES``/``OUTPUT_IS_LIST``, flags, and a
function that sets ``cls.hidden`` from the hidden inputs, calls ``execute`` and turns its
:class:`~.io.NodeOutput` into ComfyUI's result dict. ``fingerprint_inputs``,
``validate_inputs`` and ``check_lazy_status``, when a node defines them, become
``IS_CHANGED``, ``VALIDATE_INPUTS`` and ``check_lazy_status``.
"""

from __future__ import annotations

from typing import Any

from graph.schema import ExecutionBlocker

from . import io

_HIDDEN_NAMES = {h.value: h.name for h in io.Hidden}


def _overrides(node: type, name: str) -> bool:
    return any(name in vars(base) for base in node.__mro__ if base is not io.ComfyNode and base is not object)


def to_v1_class(node: type[io.ComfyNode]) -> tuple[str, type, str | None]:
    """``(node_id, V1 class, display name)`` for a V3 node class."""
    schema = node.define_schema()
    hidden = {h.name: h.value for h in schema.hidden}
    outputs = list(schema.outputs)

    def input_types(cls: type) -> dict[str, Any]:
        fresh = node.define_schema()  # combos of file lists change: read the schema each time
        req: dict[str, Any] = {}
        opt: dict[str, Any] = {}
        for item in fresh.inputs:
            (opt if item.optional else req)[item.id] = item.entry()
        out: dict[str, Any] = {"required": req}
        if opt:
            out["optional"] = opt
        if hidden:
            out["hidden"] = dict(hidden)
        return out

    def run(self: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in list(kwargs) if name in hidden}
        from ....declaration import resolve_awaitable

        node.hidden = io.HiddenHolder(values)
        out = resolve_awaitable(node.execute(**kwargs))  # execute may be async
        return _result(out, len(outputs))

    attrs: dict[str, Any] = {
        "__module__": node.__module__, "__doc__": node.__doc__,
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.io_type for o in outputs),
        "RETURN_NAMES": tuple(o.name for o in outputs),
        "OUTPUT_IS_LIST": tuple(o.is_output_list for o in outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip or "" for o in outputs) if any(o.tooltip for o in outputs) else None,
        "FUNCTION": "run_v3", "run_v3": run,
        "CATEGORY": schema.category, "DESCRIPTION": schema.description,
        "OUTPUT_NODE": schema.is_output_node, "INPUT_IS_LIST": schema.is_input_list,
        "NOT_IDEMPOTENT": schema.not_idempotent, "DEPRECATED": schema.is_deprecated,
        "EXPERIMENTAL": schema.is_experimental, "V3_NODE": node,
    }
    # Bound classmethods of the node, as static attributes: their signatures name the inputs they want.
    for v3_name, v1_name in (("fingerprint_inputs", "IS_CHANGED"), ("validate_inputs", "VALIDATE_INPUTS"),
                             ("check_lazy_status", "check_lazy_status")):
        if _overrides(node, v3_name):
            attrs[v1_name] = staticmethod(getattr(node, v3_name))
    cls = type(node.__name__, (), attrs)
    return schema.node_id, cls, schema.display_name


def _result(out: Any, slots: int) -> Any:
    """ComfyUI's result forms from what ``execute`` returned."""
    if not isinstance(out, io.NodeOutput):
        return out
    if out.block_execution is not None:
        return ExecutionBlocker(out.block_execution)
    result: dict[str, Any] = {"result": tuple(out.args)}
    if out.ui is not None:
        result["ui"] = out.ui.as_dict() if hasattr(out.ui, "as_dict") else dict(out.ui)
    if out.expand is not None:
        result["expand"] = out.expand
    return result
