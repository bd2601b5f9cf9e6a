"""UI workflow -> API prompt, as the official editor's ``graphToPrompt`` does it (PROTOCOL.md 6.5, 6.6).

The conversion needs the node definitions (a :class:`~graph.schema.Registry`) because
``widgets_values`` is positional and some slots belong to editor-only widgets.

What it does, in the editor's order:

1. PrimitiveNode values are copied into the widgets they feed (through Reroutes too).
2. Subgraph instances are flattened: inner nodes get ids ``"<instance>:<inner>"``
   (nesting gives ``"a:b:c"``). A muted or bypassed instance passes its mode to its inner
   nodes: the frontend read for PROTOCOL.md filters inner nodes by their own mode only, but
   a muted subgraph whose insides still run is not what a user means (PROTOCOL.md 6.6 and 11
   leave this open).
3. Every real node that is neither muted (mode 2) nor bypassed (mode 4) becomes a
   :class:`~graph.prompt.NodeCall`-shaped dict: widget values by input name, then each
   linked socket resolved upstream through Reroutes, bypassed nodes (matched by type),
   subgraph boundaries and promoted widgets.
4. Links whose source is not in the prompt (muted nodes) are removed.

Deliberately *not* done, so that a conversion is deterministic: ``dynamicPrompts``
expansion of ``{a|b}`` (the text is sent as written), ``%date:...%`` / ``%Node.widget%``
substitution in ``filename_prefix`` and PrimitiveNode values (the backend still expands
``%width%``-style patterns itself), and partial execution. Legacy group nodes
(``workflow>NAME``) and ``proxyWidgets`` promotion are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graph.prompt import is_link
from graph.schema import Registry
from graph.workflow_models import (
    SUBGRAPH_INPUT_ID,
    SUBGRAPH_OUTPUT_ID,
    Link,
    Node,
    SubgraphDefinition,
    Workflow,
    WorkflowError,
    is_ui_workflow,
    parse_workflow,
)
from graph.workflow_sockets import (
    bypass_input,
    definition_input_name,
    instance_socket,
    promoted_inputs,
    socket_of,
)
from graph.workflow_widgets import widget_inputs

__all__ = [
    "VIRTUAL_TYPES",
    "Link",
    "Node",
    "SubgraphDefinition",
    "Workflow",
    "WorkflowError",
    "is_ui_workflow",
    "parse_workflow",
    "to_prompt",
]

#: Editor-only node types: never sent to the backend.
VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
MUTED = 2
BYPASSED = 4


@dataclass(frozen=True)
class _Output:
    """A link resolved to a real node's output."""

    node_id: str
    slot: int


@dataclass(frozen=True)
class _Value:
    """A link resolved to a constant (a promoted subgraph widget)."""

    value: Any


_Resolved = _Output | _Value | None


@dataclass
class _Frame:
    """One graph being flattened: the root, or one subgraph instance (its definition + where it sits)."""

    nodes: dict[str, Node]
    links: dict[int, Link]
    path: tuple[str, ...] = ()
    mode: int = 0
    instance: Node | None = None
    parent: _Frame | None = None
    definition: SubgraphDefinition | None = None
    children: dict[str, _Frame] = field(default_factory=dict)

    def exec_id(self, node_id: str) -> str:
        """The id the node has in the API prompt."""
        return ":".join((*self.path, node_id))

    def mode_of(self, node: Node) -> int:
        """The node's own mute/bypass, else the one inherited from its subgraph instance."""
        return node.mode if node.mode in (MUTED, BYPASSED) else self.mode


def to_prompt(workflow: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """Convert an editor workflow (schema 0.4 or 1) into the API prompt the editor would queue.

    Raises :class:`WorkflowError` (one line, naming the node) for a malformed workflow, a
    node type that is neither registered nor editor-only, or links that loop.
    """
    return _Converter(parse_workflow(workflow), registry).convert()


class _Converter:
    """One conversion; holds the flattened frames and the values PrimitiveNodes pushed into widgets."""

    def __init__(self, workflow: Workflow, registry: Registry) -> None:
        self.registry = registry
        self.definitions = workflow.subgraph_definitions()
        self.root = self._frame(workflow.nodes, workflow.links)
        #: (frame path, node id) -> {widget name: value} set by PrimitiveNodes.
        self.overrides: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}

    @staticmethod
    def _frame(nodes: list[Node], links: list[Link], **kwargs: Any) -> _Frame:
        return _Frame({str(n.id): n for n in nodes}, {link.id: link for link in links}, **kwargs)

    def convert(self) -> dict[str, Any]:
        """Run the steps of the module docstring."""
        frames = self._expand(self.root, ())
        for frame in frames:
            self._apply_primitives(frame)
        prompt: dict[str, Any] = {}
        for frame in frames:
            for node_id, node in frame.nodes.items():
                call = self._node_call(frame, node_id, node)
                if call is not None:
                    prompt[frame.exec_id(node_id)] = call
        for call in prompt.values():
            inputs = call["inputs"]
            for name in [n for n, v in inputs.items() if is_link(v) and v[0] not in prompt]:
                del inputs[name]
        return prompt

    # -- flattening ---------------------------------------------------------------------------

    def _expand(self, frame: _Frame, open_definitions: tuple[str, ...]) -> list[_Frame]:
        """``frame`` and every subgraph instance frame below it, depth first."""
        frames = [frame]
        for node_id, node in frame.nodes.items():
            definition = self.definitions.get(node.type)
            if definition is None:
                continue
            if definition.id in open_definitions:
                raise WorkflowError(f"subgraph '{definition.name or definition.id}' contains itself")
            child = self._frame(
                definition.nodes,
                definition.links,
                path=(*frame.path, node_id),
                mode=frame.mode_of(node),
                instance=node,
                parent=frame,
                definition=definition,
            )
            frame.children[node_id] = child
            frames += self._expand(child, (*open_definitions, definition.id))
        return frames

    def _apply_primitives(self, frame: _Frame) -> None:
        """Copy each PrimitiveNode's value into the widgets it feeds (the editor's applyToGraph)."""
        for node_id, node in frame.nodes.items():
            if node.type != "PrimitiveNode" or not isinstance(node.widgets_values, list) or not node.widgets_values:
                continue
            value = node.widgets_values[0]
            for link in self._links_from(frame, node_id):
                self._push_value(frame, link, value, depth=0)

    def _push_value(self, frame: _Frame, link: Link, value: Any, depth: int) -> None:
        if depth > len(frame.nodes):
            raise WorkflowError(f"links loop through Reroute nodes near node {frame.exec_id(str(link.target_id))}")
        target_id = str(link.target_id)
        target = frame.nodes.get(target_id)
        if target is None:
            return
        if target.type == "Reroute":
            for onward in self._links_from(frame, target_id):
                self._push_value(frame, onward, value, depth + 1)
            return
        socket = socket_of(target, link)
        if socket is not None:
            name = socket.widget.name if socket.widget else socket.name
            self.overrides.setdefault((frame.path, target_id), {})[name] = value

    @staticmethod
    def _links_from(frame: _Frame, node_id: str) -> list[Link]:
        return [link for link in frame.links.values() if str(link.origin_id) == node_id]

    # -- one node -----------------------------------------------------------------------------

    def _node_call(self, frame: _Frame, node_id: str, node: Node) -> dict[str, Any] | None:
        """The API entry of one node, or None for nodes the backend never sees."""
        if node.type in VIRTUAL_TYPES or node.type in self.definitions or frame.mode_of(node) in (MUTED, BYPASSED):
            return None
        schema = self.registry.get(node.type)
        if schema is None:
            if node.type.startswith(("workflow>", "workflow/")):
                raise WorkflowError(
                    f"node {frame.exec_id(node_id)} is a legacy group node ({node.type}), not supported"
                )
            raise WorkflowError(f"node {frame.exec_id(node_id)} has unknown type '{node.type}'")
        values = widget_inputs(schema, node.widgets_values, node.widgets_values_named)
        for name, value in self.overrides.get((frame.path, node_id), {}).items():
            if name in values:  # the editor only sets widgets the node has
                values[name] = value
        inputs = {name: _wrap(value) for name, value in values.items()}
        for socket in node.inputs:
            if socket.link is None:
                continue
            resolved = self._resolve_link(frame, socket.link, socket.type, set())
            name = socket.name or (socket.widget.name if socket.widget else "")
            if isinstance(resolved, _Output):
                inputs[name] = [resolved.node_id, resolved.slot]
            elif isinstance(resolved, _Value):
                inputs[name] = _wrap(resolved.value)
        title = node.title if node.title is not None else (schema.display_name or schema.name)
        return {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}

    # -- link resolution ----------------------------------------------------------------------

    def _resolve_link(self, frame: _Frame, link_id: int, want: Any, seen: set[tuple[str, ...]]) -> _Resolved:
        """Follow link ``link_id`` of ``frame`` upstream to a real output or a promoted value."""
        link = frame.links.get(link_id)
        if link is None:
            return None
        origin = str(link.origin_id)
        if origin == str(SUBGRAPH_INPUT_ID):
            return self._from_subgraph_input(frame, link.origin_slot, want, seen)
        return self._resolve_origin(frame, origin, link.origin_slot, want, seen)

    def _resolve_origin(
        self, frame: _Frame, node_id: str, slot: int, want: Any, seen: set[tuple[str, ...]]
    ) -> _Resolved:
        key = (*frame.path, node_id)
        if key in seen:
            raise WorkflowError(f"links loop through node {frame.exec_id(node_id)}")
        seen.add(key)
        node = frame.nodes.get(node_id)
        if node is None:
            return None
        mode = frame.mode_of(node)
        if mode == BYPASSED:
            return self._through_bypass(frame, node, slot, want, seen)
        if mode == MUTED:
            return _Output(frame.exec_id(node_id), slot)  # dropped at the end, as the editor does
        child = frame.children.get(node_id)
        if child is not None:
            return self._from_subgraph_output(child, slot, want, seen)
        if node.type in VIRTUAL_TYPES:
            # A Reroute passes its input on; a PrimitiveNode has no input, so nothing resolves.
            if slot < len(node.inputs) and node.inputs[slot].link is not None:
                return self._resolve_link(frame, node.inputs[slot].link, want, seen)
            return None
        return _Output(frame.exec_id(node_id), slot)

    def _from_subgraph_output(self, child: _Frame, slot: int, want: Any, seen: set[tuple[str, ...]]) -> _Resolved:
        """Output ``slot`` of an instance: continue from the inner link that feeds it."""
        for link in child.links.values():
            if str(link.target_id) == str(SUBGRAPH_OUTPUT_ID) and link.target_slot == slot:
                return self._resolve_link(child, link.id, want, seen)
        return None

    def _from_subgraph_input(self, frame: _Frame, slot: int, want: Any, seen: set[tuple[str, ...]]) -> _Resolved:
        """Input ``slot`` of the subgraph: the instance's link there, else its promoted widget value."""
        instance, parent = frame.instance, frame.parent
        if instance is None or parent is None:
            return None
        name = definition_input_name(frame.definition, slot)
        socket = instance_socket(instance, slot, name)
        if socket is not None and socket.link is not None:
            # Outside, the editor matches types against the instance's socket, not the inner input.
            return self._resolve_link(parent, socket.link, socket.type, seen)
        return self._promoted_value(frame, name if socket is None else socket.name or name)

    def _promoted_value(self, frame: _Frame, name: str | None) -> _Value | None:
        """The value of the instance's widget for subgraph input ``name``, if it has one."""
        instance, parent, definition = frame.instance, frame.parent, frame.definition
        if name is None or instance is None or parent is None or definition is None:
            return None
        pushed = self.overrides.get((parent.path, str(instance.id)), {})
        if name in pushed:
            return _Value(pushed[name])
        if instance.widgets_values_named and name in instance.widgets_values_named:
            return _Value(instance.widgets_values_named[name])
        values = instance.widgets_values
        if isinstance(values, dict):
            return _Value(values[name]) if name in values else None
        promoted = promoted_inputs(instance, definition)
        if values and name in promoted and promoted.index(name) < len(values):
            return _Value(values[promoted.index(name)])
        return None

    def _through_bypass(self, frame: _Frame, node: Node, slot: int, want: Any, seen: set[tuple[str, ...]]) -> _Resolved:
        """Output ``slot`` of a bypassed node: continue from the input the editor picks for it."""
        index = bypass_input(node, slot, want, self._output_type(node, slot))
        if index is None or node.inputs[index].link is None:
            return None
        # Upstream of a bypassed node the editor matches against the input it chose.
        return self._resolve_link(frame, node.inputs[index].link, node.inputs[index].type, seen)

    def _output_type(self, node: Node, slot: int) -> Any:
        if slot < len(node.outputs):
            return node.outputs[slot].type
        schema = self.registry.get(node.type)
        if schema is not None and slot < len(schema.outputs):
            return schema.outputs[slot].type
        return "*"


def _wrap(value: Any) -> Any:
    """Arrays are sent as ``{"__value__": [...]}`` so that the backend does not take them for links."""
    return {"__value__": value} if isinstance(value, list) else value
