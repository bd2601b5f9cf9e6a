"""``GET /object_info``: node schemas in ComfyUI's V1 node-definition shape (PROTOCOL.md 4.1).

Keys follow the classic V1 form: hidden inputs are bare strings, combos are
``[[options], {...}]`` (unless declared as ``"COMBO"``), and ``output_tooltips``,
``deprecated`` and ``experimental`` appear only when set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from graph.schema import NodeSchema

log = logging.getLogger(__name__)


def node_info(schema: NodeSchema) -> dict[str, Any]:
    """The ``/object_info`` entry of one node type."""
    sections: dict[str, dict[str, Any]] = {"required": {}}
    for spec in schema.input_specs():
        sections.setdefault(spec.section, {})[spec.name] = spec.config()
    info: dict[str, Any] = {
        "input": sections,
        "input_order": {section: list(entries) for section, entries in sections.items()},
        "output": [o.type for o in schema.outputs],
        "output_is_list": [o.is_list for o in schema.outputs],
        "output_name": [o.name for o in schema.outputs],
        "name": schema.name,
        "display_name": schema.display_name or schema.name,
        "description": schema.description,
        "python_module": schema.python_module,
        "category": schema.category,
        "output_node": schema.output_node,
    }
    if any(o.tooltip is not None for o in schema.outputs):
        info["output_tooltips"] = [o.tooltip or "" for o in schema.outputs]
    if schema.deprecated:
        info["deprecated"] = True
    if schema.experimental:
        info["experimental"] = True
    return info


def object_info(registry: Mapping[str, NodeSchema]) -> dict[str, dict[str, Any]]:
    """``{class_type: node_info}`` for every node; a node whose inputs cannot be read is logged and left out."""
    out: dict[str, dict[str, Any]] = {}
    for name, schema in registry.items():
        try:
            out[name] = node_info(schema)
        except Exception:  # one custom node with a broken INPUT_TYPES must not take the whole list down
            log.exception("cannot describe node %s", name)
    return out
