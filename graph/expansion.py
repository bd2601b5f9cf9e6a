"""Node expansion: a node that returns ``{"result": ..., "expand": {id: node}}`` (PROTOCOL.md 5.5).

The new nodes join the running prompt as *ephemeral* nodes whose parent is the expanding
node; their ids are the ones the node chose (ComfyUI's GraphBuilder makes them unique as
``<parent>.<call>.<graph>.<n>``). The parent waits for the nodes its result links to, and
when it comes back its result is resolved from their outputs. Events about an ephemeral
node name it in ``node`` and its top-level ancestor's display id in ``display_node``; an
error is reported on the real (top-level) node.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from graph.cache import compute_signatures
from graph.dag import kahn_order, node_links
from graph.listmap import merge_outputs
from graph.prompt import is_link
from graph.schema import NodeSchema, Registry

Calls = list[tuple[dict[str, Any] | None, tuple[Any, ...]]]


class DuplicateNodeError(Exception):
    """An expansion used a node id that the prompt already has."""


@dataclass
class Expansions:
    """Ephemeral nodes of one run: who made them, how to show them, and the results they owe."""

    #: ephemeral id -> (display node id, parent node id, real node id); absent = a prompt node.
    ids: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)
    #: expanding node id -> its per-call (graph, result) pairs, until it is resolved.
    pending: dict[str, Calls] = field(default_factory=dict)

    def display(self, node_id: str) -> tuple[str, str | None, str]:
        """(display node id, parent node id, real node id) of any node."""
        return self.ids.get(node_id, (node_id, None, node_id))

    def add(self, parent: str, calls: Calls, registry: Registry, prompt: MutableMapping[str, Any],
            schemas: MutableMapping[str, NodeSchema | None], links: MutableMapping[str, list[tuple[str, str, int]]],
            signatures: dict[str, str]) -> tuple[list[str], list[str]]:
        """Add the calls' graphs to the run; returns (nodes the parent now waits for, new output nodes)."""
        parent_display, _, real = self.display(parent)
        added: dict[str, Any] = {}
        waits: list[str] = []
        outputs: list[str] = []
        for graph, result in calls:
            if graph is None:
                continue
            for new_id, node in graph.items():
                if new_id in prompt or new_id in added:
                    raise DuplicateNodeError(f"expansion of node '{parent}' adds node '{new_id}', which exists")
                added[new_id] = {"class_type": node["class_type"], "inputs": dict(node.get("inputs") or {})}
                display = node.get("override_display_id") or parent_display
                self.ids[new_id] = (display, parent, real)
            waits.extend(value[0] for value in result if is_link(value))
        for new_id, node in added.items():
            prompt[new_id] = node
            schema = registry.get(node["class_type"]) if isinstance(node["class_type"], str) else None
            schemas[new_id] = schema
            links[new_id] = node_links(node)
            if schema is not None and schema.output_node:
                outputs.append(new_id)
        order, _stuck = kahn_order(added)
        compute_signatures(prompt, schemas, order, signatures)
        self.pending[parent] = calls
        return list(dict.fromkeys(waits)), outputs

    def resolve(self, parent: str, values: Mapping[str, list[list[Any]]], output_is_list: tuple[bool, ...]
                ) -> list[list[Any]]:
        """The parent's outputs: links in its result replaced by what the linked nodes produced."""
        resolved: list[tuple[Any, ...]] = []
        for graph, result in self.pending.pop(parent):
            if graph is None:
                resolved.append(result)
                continue
            items: list[Any] = []
            for value in result:
                if is_link(value):
                    items.extend(values[value[0]][int(value[1])])
                else:
                    items.append(value)
            resolved.append(tuple(items))
        return merge_outputs(resolved, output_is_list)
