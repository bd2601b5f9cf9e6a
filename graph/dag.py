"""The prompt as a directed graph: which nodes feed which, in what order they can run.

Edges point from the node that produces a value to the node that consumes it, so the
*ancestors* of an output node are everything it needs. Everything here is iterative (no
recursion over the graph): ComfyUI's recursive walks hit Python's recursion limit near a
thousand nodes (FINDINGS.md), and a prompt may have ten thousand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx

from graph.prompt import is_link


class DependencyCycleError(Exception):
    """The nodes that must run form a cycle, so no order exists."""

    #: ComfyUI reports this error type string (its class lives in ``comfy_execution.graph``).
    comfy_type = "graph.DependencyCycleError"


def node_links(node: Any) -> list[tuple[str, str, int]]:
    """The links of one prompt node as ``(input name, source node id, output slot)``, in input order.

    Odd nodes (not a dict, ``inputs`` not a dict) simply have no links.
    """
    inputs = node.get("inputs") if isinstance(node, dict) else None
    if not isinstance(inputs, dict):
        return []
    return [(name, value[0], int(value[1])) for name, value in inputs.items() if is_link(value)]


def build_graph(prompt: Mapping[str, Any]) -> nx.DiGraph:
    """A DiGraph with one vertex per prompt node and an edge source -> consumer per link.

    Each edge carries ``inputs``: the list of ``(input name, slot)`` it feeds. Links to node
    ids that are not in the prompt are left out (validation reports them).
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(prompt)
    for node_id, node in prompt.items():
        for name, source, slot in node_links(node):
            if source not in prompt:
                continue
            if graph.has_edge(source, node_id):
                graph[source][node_id]["inputs"].append((name, slot))
            else:
                graph.add_edge(source, node_id, inputs=[(name, slot)])
    return graph


def needed_nodes(graph: nx.DiGraph, outputs: Iterable[str]) -> set[str]:
    """The requested outputs and all their ancestors (partial execution runs only these)."""
    needed: set[str] = set()
    stack = [o for o in outputs if o in graph]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        stack.extend(p for p in graph.predecessors(node) if p not in needed)
    return needed


def topological_order(graph: nx.DiGraph, nodes: Iterable[str] | None = None) -> list[str]:
    """The nodes (all, or the given subset) in an order where every producer comes first.

    Raises :class:`DependencyCycleError` naming one cycle if there is none.
    """
    sub = graph if nodes is None else graph.subgraph(nodes)
    try:
        return list(nx.topological_sort(sub))
    except nx.NetworkXUnfeasible:
        cycle = [edge[0] for edge in nx.find_cycle(sub)]
        raise DependencyCycleError(f"Dependency cycle detected: {' -> '.join([*cycle, cycle[0]])}") from None


def kahn_order(prompt: Mapping[str, Any],
               links: Mapping[str, list[tuple[str, str, int]]] | None = None) -> tuple[list[str], list[str]]:
    """Topological order of the whole prompt without building a networkx graph (the hot path).

    ``links`` may hold the :func:`node_links` of every node, already computed. Returns
    ``(ordered, stuck)``: ``stuck`` are the nodes on or behind a cycle, which have no place
    in any order. Links to missing nodes are ignored. Ties keep prompt order.
    """
    consumers: dict[str, list[str]] = {}
    waiting: dict[str, int] = {}
    for node_id, node in prompt.items():
        count = 0
        for _name, source, _slot in (links[node_id] if links is not None else node_links(node)):
            if source in prompt:
                consumers.setdefault(source, []).append(node_id)
                count += 1
        waiting[node_id] = count
    ready = [n for n, c in waiting.items() if c == 0]
    ready.reverse()
    ordered: list[str] = []
    while ready:
        node_id = ready.pop()
        ordered.append(node_id)
        for consumer in consumers.get(node_id, ()):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
    if len(ordered) == len(waiting):
        return ordered, []
    placed = set(ordered)
    return ordered, [n for n in prompt if n not in placed]
