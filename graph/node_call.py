"""One node call: its inputs gathered as lists, the function mapped over them, the results merged.

This is the part of execution that knows about a single node (PROTOCOL.md sections 4.4,
5.4 and 5.6): hidden-input injection, list mapping, ExecutionBlocker propagation and the
forms a node may return. Ordering, caching and events around it are ``graph.executor``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graph.events import EventLog
from graph.listmap import call_count, call_inputs, map_calls, merge_outputs, merge_ui
from graph.prompt import is_link
from graph.schema import ExecContext, ExecutionBlocker, NodeSchema


@dataclass(frozen=True)
class ClassInfo:
    """What execution needs of a node class, read once per prompt (``input_specs`` may be dynamic)."""

    declared: frozenset[str]
    hidden: tuple[tuple[str, str], ...]
    lazy: frozenset[str]
    output_is_list: tuple[bool, ...]

    @classmethod
    def of(cls, schema: NodeSchema) -> ClassInfo:
        """Read a schema's inputs and outputs."""
        specs = schema.input_specs()
        return cls(frozenset(s.name for s in specs if s.section != "hidden"),
                   tuple((s.name, s.type) for s in specs if s.section == "hidden"),
                   frozenset(s.name for s in specs if s.lazy),
                   tuple(o.is_list for o in schema.outputs))


@dataclass
class NodeOutcome:
    """What one node produced: per-slot output lists and its merged ``ui`` (or None).

    When a call returned a subgraph (``expand``), ``outputs`` is empty and ``expansions``
    holds ``(graph or None, result tuple)`` per call: the result may link into the graph.
    """

    outputs: list[list[Any]]
    ui: dict[str, Any] | None
    expansions: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] | None = None


def hidden_values(prompt: Mapping[str, Any], node_id: str, extra_data: Mapping[str, Any]) -> dict[str, Any]:
    """The value of each hidden input kind for this node (DYNPROMPT is the prompt itself here)."""
    return {
        "PROMPT": prompt,
        "DYNPROMPT": prompt,
        "EXTRA_PNGINFO": extra_data.get("extra_pnginfo"),
        "UNIQUE_ID": node_id,
        "AUTH_TOKEN_COMFY_ORG": extra_data.get("auth_token_comfy_org"),
        "API_KEY_COMFY_ORG": extra_data.get("api_key_comfy_org"),
    }


def gather_inputs(node_id: str, node: Mapping[str, Any], info: ClassInfo, values: Mapping[str, list[list[Any]]],
                  prompt: Mapping[str, Any], extra_data: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every input as a list: constants wrapped, links read from ``values`` (None when not evaluated yet).

    Undeclared constants are dropped, undeclared links still passed, hidden inputs injected.
    """
    data: dict[str, list[Any]] = {}
    inputs = node.get("inputs") or {}
    declared = info.declared
    for name, value in inputs.items():
        if is_link(value):
            produced = values.get(value[0])
            data[name] = [None] if produced is None else produced[int(value[1])]
        elif name in declared:
            data[name] = [value]
    if info.hidden:
        hidden = hidden_values(prompt, node_id, extra_data)
        for name, kind in info.hidden:
            data[name] = [hidden.get(kind)]
    return data


def _blocker_in(kwargs: Mapping[str, Any], input_is_list: bool) -> ExecutionBlocker | None:
    """The first ExecutionBlocker among a call's inputs, if any."""
    for value in kwargs.values():
        if isinstance(value, ExecutionBlocker):
            return value
        if input_is_list and isinstance(value, list):
            for item in value:
                if isinstance(item, ExecutionBlocker):
                    return item
    return None


def _normalise(result: Any, slots: int) -> tuple[tuple[Any, ...], dict[str, Any] | None, dict[str, Any] | None]:
    """(output values, ui, expansion graph) from any of the forms a node may return."""
    if isinstance(result, ExecutionBlocker):
        return (result,) * slots, None, None
    if isinstance(result, dict):
        values = result.get("result", ())
        if isinstance(values, ExecutionBlocker):
            values = (values,) * slots
        return tuple(values), result.get("ui"), result.get("expand")
    if result is None:
        return (), None, None
    return tuple(result), None, None


def call_node(node_id: str, schema: NodeSchema, info: ClassInfo, instance: Any, ctx: ExecContext,
              data: Mapping[str, list[Any]], log: EventLog, done: list[str],
              check_interrupted: Callable[[], None]) -> NodeOutcome:
    """Run the node's function over its input lists; blocked calls are skipped and pass blockers on."""
    execute = schema.behaviour.execute
    slots = len(schema.outputs)
    per_call: list[tuple[Any, ...]] = []
    graphs: list[dict[str, Any] | None] = []
    uis: list[dict[str, Any] | None] = []
    for index in range(call_count(data, schema.input_is_list)):
        check_interrupted()
        kwargs = call_inputs(data, index, schema.input_is_list)
        blocker = _blocker_in(kwargs, schema.input_is_list)
        if blocker is not None:
            if blocker.message is not None:
                # The first consumer reports the block once per call and passes on a silent one.
                log.blocked(node_id, schema.name, done, blocker.message)
                blocker = ExecutionBlocker(None)
            per_call.append((blocker,) * slots)
            graphs.append(None)
            continue
        values, ui, graph = _normalise(execute(instance, ctx, kwargs), slots)
        per_call.append(values)
        graphs.append(graph)
        uis.append(ui)
    if any(graph is not None for graph in graphs):
        return NodeOutcome([], merge_ui(uis), list(zip(graphs, per_call, strict=True)))
    return NodeOutcome(merge_outputs(per_call, info.output_is_list), merge_ui(uis))


def lazy_requests(schema: NodeSchema, instance: Any, data: Mapping[str, list[Any]]) -> list[str]:
    """The names ``check_lazy_status`` asks for (list-mapped, first-asked order, no repeats)."""
    check_lazy = schema.behaviour.check_lazy
    if check_lazy is None:
        return []
    names: list[str] = []
    for asked in map_calls(lambda kwargs: check_lazy(instance, kwargs), data, schema.input_is_list):
        for name in asked or ():
            if name not in names:
                names.append(name)
    return names
