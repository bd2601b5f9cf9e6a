"""The execution events of one prompt, with ComfyUI's names and payloads (PROTOCOL.md section 3.2).

Everything the executor tells the world goes through one :class:`EventLog`, which calls
the sink ``sink(event_type, data)`` and keeps the history's ``status.messages`` (the
``execution_start``, ``execution_cached`` and final events, each with a ``timestamp``).

**progress_state is a delta.** ComfyUI's ``progress_state`` carries the state of every
node seen so far, so a prompt of N nodes streams O(N²) bytes (FINDINGS.md measured it).
Ours carries only the node(s) whose state changed in that event, with the same per-node
fields; a client that merges ``nodes`` into what it has (as ComfyUI's frontend does per
node id) sees the same picture, in linear time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from graph.schema import ExecutionInterrupted

Sink = Callable[[str, dict[str, Any]], None]


def now_ms() -> int:
    """Milliseconds since the epoch, as ComfyUI stamps its messages."""
    return int(time.time() * 1000)


def format_inputs(inputs: dict[str, Any]) -> dict[str, list[Any]]:
    """``current_inputs`` of an error: each value kept if JSON-simple, else its ``str``."""
    formatted: dict[str, list[Any]] = {}
    for name, values in inputs.items():
        items = values if isinstance(values, list) else [values]
        formatted[name] = [v if v is None or isinstance(v, int | float | bool | str) else str(v) for v in items]
    return formatted


class EventLog:
    """Sends one prompt's events to a sink and records its history messages."""

    def __init__(self, prompt_id: str, sink: Sink | None,
                 ids: Callable[[str], tuple[str, str | None, str]] | None = None,
                 extra_data: Mapping[str, Any] | None = None) -> None:
        """``ids(node_id)`` gives (display node id, parent node id, real node id) for expanded nodes.

        ``extra_data`` is the prompt's ``extra_data``, handed to running nodes through their context.
        """
        self.prompt_id = prompt_id
        self.extra_data: Mapping[str, Any] = extra_data or {}
        self.sink = sink
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.ids = ids or (lambda node_id: (node_id, None, node_id))

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Pass one event to the sink (a sink that raises must not stop the prompt)."""
        if self.sink is not None:
            # A broken listener is not the prompt's failure (try/except: cheaper than suppress here).
            try:  # noqa: SIM105
                self.sink(event, data)
            except Exception:
                pass

    def message(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """A history message: stamped, recorded and sent."""
        data["timestamp"] = now_ms()
        self.messages.append((event, data))
        self.send(event, data)
        return data

    def node_state(self, node_id: str, state: str, value: float, maximum: float) -> None:
        """A ``progress_state`` delta for one node (state ``running``, ``finished`` or ``error``)."""
        if self.sink is None:
            return
        display, parent, real = self.ids(node_id)
        self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": {node_id: {
            "value": value, "max": maximum, "state": state, "node_id": node_id, "prompt_id": self.prompt_id,
            "display_node_id": display, "parent_node_id": parent, "real_node_id": real}}})

    def executing(self, node_id: str) -> None:
        """A node's function is about to run."""
        self.send("executing", {"node": node_id, "display_node": self.ids(node_id)[0], "prompt_id": self.prompt_id})

    def executed(self, node_id: str, ui: dict[str, Any] | None) -> None:
        """A node produced ``ui`` output (or a cached output node was revisited)."""
        self.send("executed", {"node": node_id, "display_node": self.ids(node_id)[0], "output": ui,
                               "prompt_id": self.prompt_id})

    def blocked(self, node_id: str, node_type: str, executed: list[str], message: str) -> None:
        """An ExecutionBlocker with a message reached a node (not a history message: no timestamp)."""
        self.send("execution_error", {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": node_type, "executed": list(executed),
            "exception_message": f"Execution Blocked: {message}", "exception_type": "ExecutionBlocked",
            "traceback": [], "current_inputs": [], "current_outputs": []})


class NodeContext:
    """The :class:`graph.schema.ExecContext` handed to a running node."""

    def __init__(self, log: EventLog, node_id: str, is_interrupted: Callable[[], bool]) -> None:
        self.node_id = node_id
        self.prompt_id = log.prompt_id
        #: The last ``total`` reported (a finished node's state shows value = max = this).
        self.total: float = 1
        self._log = log
        self._is_interrupted = is_interrupted

    @property
    def extra_data(self) -> Mapping[str, Any]:
        """The prompt's ``extra_data`` (read-only by convention): e.g. ``preview_method`` for samplers."""
        return self._log.extra_data

    def check_interrupted(self) -> None:
        """Raise ExecutionInterrupted if the run was interrupted."""
        if self._is_interrupted():
            raise ExecutionInterrupted("Processing interrupted")

    def progress(self, value: int, total: int, preview: Any | None = None) -> None:
        """Report a step: ``progress``, a ``progress_state`` delta and, with a preview, ``preview``."""
        self.check_interrupted()
        self.total = total
        log = self._log
        log.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id})
        log.node_state(self.node_id, "running", value, total)
        if preview is not None:
            log.send("preview", {"prompt_id": self.prompt_id, "node_id": self.node_id,
                                 "display_node_id": log.ids(self.node_id)[0], "preview": preview})
