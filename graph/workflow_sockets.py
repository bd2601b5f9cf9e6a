"""Socket-level rules of the editor's link resolution (PROTOCOL.md 6.5, 6.6).

Which input a bypassed node passes through, when two socket types connect, which socket a
link arrives at, and which subgraph inputs carry a promoted widget.
"""

from __future__ import annotations

from typing import Any

from graph.workflow_models import SUBGRAPH_INPUT_ID, Link, Node, NodeInput, SubgraphDefinition

#: Socket types that connect to anything (litegraph treats empty and 0 like ``*``).
ANY_TYPES = ("*", "", None, 0)


def bypass_input(node: Node, slot: int, want: Any, out_type: Any) -> int | None:
    """Which input a bypassed node's output ``slot`` passes through to a consumer of type ``want``.

    The editor's rule: any-typed consumer -> the input at the same index (else the first);
    otherwise the same index if it fits both the output and the consumer, else the first input
    of exactly the consumer's type, else the first that fits both.
    """
    inputs = node.inputs
    if not inputs:
        return None
    if want in ANY_TYPES:
        return slot if slot < len(inputs) else 0
    if slot < len(inputs) and compatible(inputs[slot].type, out_type) and compatible(inputs[slot].type, want):
        return slot
    for index, socket in enumerate(inputs):
        if socket.type == want:
            return index
    for index, socket in enumerate(inputs):
        if compatible(socket.type, out_type) and compatible(socket.type, want):
            return index
    return None


def compatible(a: Any, b: Any) -> bool:
    """The editor's connection rule: equal, either side any (``*``/empty), or comma lists that overlap."""
    if a in ANY_TYPES or b in ANY_TYPES or a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    left = {t.strip() for t in a.lower().split(",")}
    right = {t.strip() for t in b.lower().split(",")}
    return "*" in left or "*" in right or bool(left & right)


def socket_of(node: Node, link: Link) -> NodeInput | None:
    """The input socket a link arrives at (by link id; the slot index is the fallback)."""
    for socket in node.inputs:
        if socket.link == link.id:
            return socket
    return node.inputs[link.target_slot] if 0 <= link.target_slot < len(node.inputs) else None


def definition_input_name(definition: SubgraphDefinition | None, slot: int) -> str | None:
    """The name of the subgraph definition's input ``slot``, if it has one."""
    if definition is not None and 0 <= slot < len(definition.inputs):
        return definition.inputs[slot].name
    return None


def instance_socket(instance: Node, slot: int, name: str | None) -> NodeInput | None:
    """The instance's socket for subgraph input ``slot`` (by name when the two lists disagree)."""
    if 0 <= slot < len(instance.inputs) and (name is None or instance.inputs[slot].name == name):
        return instance.inputs[slot]
    return next((s for s in instance.inputs if name is not None and s.name == name), None)


def promoted_inputs(instance: Node, definition: SubgraphDefinition) -> list[str]:
    """Names of the subgraph inputs that carry a widget on the instance, in ``widgets_values`` order.

    The instance's sockets say so (``widget``); older files without that mark are read from the
    definition: an input promotes a widget when it feeds an inner widget socket.
    """
    marked = [socket.name for socket in instance.inputs if socket.widget is not None]
    if marked:
        return marked
    inner = {str(n.id): n for n in definition.nodes}
    names = []
    for slot, io in enumerate(definition.inputs):
        for link in definition.links:
            if str(link.origin_id) != str(SUBGRAPH_INPUT_ID) or link.origin_slot != slot:
                continue
            target = inner.get(str(link.target_id))
            socket = socket_of(target, link) if target is not None else None
            if socket is not None and socket.widget is not None:
                names.append(io.name)
                break
    return names
