"""Runs a validated prompt: only the needed, uncached nodes, in dependency order, with events.

One :class:`Executor` lives as long as the worker; it owns the output cache and the node
instances (per node id and class, as ComfyUI keeps them). :meth:`Executor.run` handles one
prompt (PROTOCOL.md section 5.2):

1. ``execution_start``; signatures of all prompt nodes (``graph.cache``), the cache told
   which ones the prompt uses; ``execution_cached`` with every node that has a hit.
2. For each requested output: a cached output node only replays ``executed``; otherwise a
   depth-first walk (an explicit stack, no recursion) runs the sources each node needs and
   then the node. Lazy inputs are not followed until ``check_lazy_status`` asks for them;
   the node then waits for them and runs again from the start. A node whose signature
   equals one already run in this prompt takes that result (identical subgraphs run once).
3. ``execution_success``, or ``execution_error`` / ``execution_interrupted`` and stop.

The final ``executing`` with ``node: null`` is not sent here: the server sends it once the
history entry is written. Unlike ComfyUI, the ``ui`` of a cached output node is part of
the result even when the prompt has no ``client_id`` (ComfyUI leaves it out of history
then, which only loses information). Node expansion (``expand``) is ``graph.expansion``'s.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from graph.cache import CacheEntry, OutputCache, compute_signatures, make_cache
from graph.dag import DependencyCycleError, kahn_order, node_links
from graph.events import EventLog, NodeContext, Sink, format_inputs
from graph.expansion import Expansions
from graph.node_call import ClassInfo, call_node, gather_inputs, lazy_requests
from graph.prompt import is_link
from graph.schema import ExecutionInterrupted, NodeSchema, Registry
from graph.validate_inputs import full_type_name


@dataclass
class RunResult:
    """The outcome of one prompt, shaped for its history entry."""

    status: Literal["success", "error", "interrupted"]
    outputs: dict[str, dict] = field(default_factory=dict)
    meta: dict[str, dict] = field(default_factory=dict)
    messages: list[tuple[str, dict]] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    error: dict | None = None


class Executor:
    """Runs prompts one at a time, keeping results between them according to a cache policy."""

    def __init__(self, registry: Registry, cache: str = "classic") -> None:
        """``cache`` is ``classic`` (default), ``lru:N``, ``ram:GB`` or ``none``; ValueError otherwise."""
        self.registry = registry
        self.cache: OutputCache = make_cache(cache)
        self.instances: dict[tuple[str, str], Any] = {}
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._running: str | None = None
        self._interrupted = threading.Event()

    def run(self, prompt: dict, prompt_id: str, outputs: list[str] | None = None,
            extra_data: dict | None = None, sink: Callable[[str, dict], None] | None = None) -> RunResult:
        """Run ``prompt`` (already validated); events go to ``sink(event, data)``. Never raises."""
        with self._run_lock:
            with self._state_lock:
                self._running = prompt_id
                self._interrupted.clear()
            try:
                return _Run(self, prompt, prompt_id, outputs, extra_data or {}, sink).execute()
            finally:
                with self._state_lock:
                    self._running = None

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only if it is ``prompt_id``, when given) at its next check. Thread-safe."""
        with self._state_lock:
            if self._running is not None and prompt_id in (None, self._running):
                self._interrupted.set()

    def clear_cache(self) -> None:
        """Forget every cached output and node instance."""
        self.cache.clear()
        self.instances.clear()


class _NodeError(Exception):
    """A node failed: carries what the ``execution_error`` event needs."""

    def __init__(self, node_id: str | None, exc: BaseException, inputs: dict[str, list[Any]] | None = None) -> None:
        super().__init__(str(exc))
        self.node_id = node_id
        self.exc = exc
        self.inputs = inputs or {}


class _Run:
    """The state of one prompt's execution."""

    def __init__(self, executor: Executor, prompt: dict, prompt_id: str, outputs: list[str] | None,
                 extra_data: dict, sink: Sink | None) -> None:
        self.executor = executor
        # A shallow copy: expansions add nodes to it, the caller's prompt stays as it was.
        self.prompt = dict(prompt) if isinstance(prompt, dict) else {}
        self.prompt_id = prompt_id
        self.requested = outputs
        self.extra_data = extra_data
        self.expansions = Expansions()
        self.log = EventLog(prompt_id, sink, self.expansions.display, extra_data)
        self.added_outputs: list[str] = []
        self.result = RunResult("success")
        self.values: dict[str, list[list[Any]]] = {}
        self.cached_ui: dict[str, dict | None] = {}
        self.fresh: set[str] = set()
        self.done: list[str] = []
        self.deps: dict[str, list[str]] = {}
        self.asked: dict[str, set[str]] = {}
        self.schemas: dict[str, NodeSchema | None] = {}
        self.signatures: dict[str, str] = {}
        self.instances: dict[tuple[str, str], Any] = {}
        self.links: dict[str, list[tuple[str, str, int]]] = {}
        self.infos: dict[str, ClassInfo] = {}

    # -- the whole prompt -------------------------------------------------------------
    def execute(self) -> RunResult:
        """Run the prompt; every failure ends up in the result, none escapes."""
        self.log.message("execution_start", {"prompt_id": self.prompt_id})
        try:
            cached = self._prepare()
            self.log.message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id})
            for output in self._outputs():
                self._run_output(output)
            while self.added_outputs:  # output nodes that expansions created
                self._run_output(self.added_outputs.pop(0))
        except ExecutionInterrupted as exc:
            self._interrupted(getattr(exc, "node_id", None))
        except _NodeError as failure:
            self._failed(failure)
        except Exception as exc:  # a bug of ours or an odd prompt: still an execution_error
            self._failed(_NodeError(None, exc))
        else:
            self.log.message("execution_success", {"prompt_id": self.prompt_id})
        self.result.messages = self.log.messages
        return self.result

    def _prepare(self) -> list[str]:
        """Schemas, signatures, cache hits; returns the ids with a cached output."""
        registry = self.executor.registry
        for node_id, node in self.prompt.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            self.schemas[node_id] = registry.get(class_type) if isinstance(class_type, str) else None
        self.links = {node_id: node_links(node) for node_id, node in self.prompt.items()}
        order, _stuck = kahn_order(self.prompt, self.links)  # nodes on a cycle get no signature: never cached
        self.signatures = compute_signatures(self.prompt, self.schemas, order)
        cache = self.executor.cache
        cache.begin_prompt(set(self.signatures.values()))
        for node_id, signature in self.signatures.items():
            entry = cache.get(signature)
            if entry is not None:
                self.values[node_id] = entry.outputs
                self.cached_ui[node_id] = entry.ui
        if cache.instances != "none":
            self.instances = self.executor.instances
            if cache.instances == "prompt":
                keep = {(n, s.name) for n, s in self.schemas.items() if s is not None}
                for key in [k for k in self.instances if k not in keep]:
                    del self.instances[key]
        return [n for n in self.prompt if n in self.values]

    def _outputs(self) -> list[str]:
        if self.requested is not None:
            return [str(o) for o in self.requested]
        return [n for n, s in self.schemas.items() if s is not None and s.output_node]

    # -- one output and its ancestors ------------------------------------------------------
    def _run_output(self, output: str) -> None:
        if output in self.fresh:
            return
        if output in self.values:
            self._replay(output)
            return
        stack = [output]
        on_stack = {output}
        cursor: dict[str, int] = {}
        while stack:
            node_id = stack[-1]
            deps = self._deps(node_id)
            i = cursor.get(node_id, 0)
            while i < len(deps) and deps[i] in self.values:
                i += 1
            cursor[node_id] = i
            if i < len(deps):
                source = deps[i]
                if source in on_stack:
                    cycle = [*stack[stack.index(source):], source]
                    raise _NodeError(node_id, DependencyCycleError(f"Dependency cycle detected: {' -> '.join(cycle)}"))
                stack.append(source)
                on_stack.add(source)
                continue
            if self.executor._interrupted.is_set():
                raise _interrupted_at(node_id)
            if self._hit_during_run(node_id, is_output=len(stack) == 1):
                pass
            elif self._run_node(node_id):
                continue  # it asked for lazy inputs: run those, then it again
            stack.pop()
            on_stack.discard(node_id)

    def _hit_during_run(self, node_id: str, is_output: bool) -> bool:
        """A node identical to one already run in this prompt (same signature) takes its result."""
        entry = self.executor.cache.get(self.signatures.get(node_id, ""))
        if entry is None:
            return False
        self.values[node_id] = entry.outputs
        self.cached_ui[node_id] = entry.ui
        if is_output:
            self._replay(node_id)
        return True

    def _deps(self, node_id: str) -> list[str]:
        """Sources a node waits for: its non-lazy links, plus lazy ones it asked for."""
        deps = self.deps.get(node_id)
        if deps is None:
            node = self.prompt.get(node_id)
            schema = self.schemas.get(node_id)
            if node is None or schema is None:
                raise _NodeError(node_id, KeyError(f"node {node_id!r} is not in the prompt or its class is unknown"))
            lazy = self._info(schema).lazy
            deps = []
            for name, source, _slot in self.links[node_id]:
                if name in lazy:
                    continue
                if source not in self.prompt:
                    raise _NodeError(node_id, KeyError(f"input '{name}' links to node '{source}', not in the prompt"))
                deps.append(source)
            self.deps[node_id] = deps
        return deps

    def _run_node(self, node_id: str) -> bool:
        """Run one node whose sources are ready; True if it asked for more (lazy) inputs first."""
        schema = self.schemas[node_id]
        assert schema is not None
        log = self.log
        data: dict[str, list[Any]] | None = None
        ctx = NodeContext(log, node_id, self.executor._interrupted.is_set)
        info = self._info(schema)
        if node_id in self.expansions.pending:  # back from an expansion: collect its results
            try:
                outputs = self.expansions.resolve(node_id, self.values, info.output_is_list)
            except Exception as exc:
                raise _NodeError(node_id, exc) from exc
            self._finish(node_id, ctx, outputs, self.cached_ui.pop(node_id, None))
            return False
        log.node_state(node_id, "running", 0, 1)
        try:
            data = gather_inputs(node_id, self.prompt[node_id], info, self.values, self.prompt, self.extra_data)
            log.executing(node_id)
            instance = self._instance(node_id, schema)
            if schema.behaviour.check_lazy is not None and self._ask_lazy(node_id, schema, instance, data):
                return True
            outcome = call_node(node_id, schema, info, instance, ctx, data, log, self.done, ctx.check_interrupted)
        except ExecutionInterrupted as exc:
            exc.node_id = node_id  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            log.node_state(node_id, "error", 0, 1)
            raise _NodeError(node_id, exc, data) from exc
        self.result.executed.append(node_id)
        if outcome.ui:
            self._record_ui(node_id, outcome.ui)
        if outcome.expansions is not None:
            try:
                waits, outputs = self.expansions.add(node_id, outcome.expansions, self.executor.registry, self.prompt,
                                                     self.schemas, self.links, self.signatures)
            except Exception as exc:
                raise _NodeError(node_id, exc, data) from exc
            self.deps[node_id].extend(waits)
            self.added_outputs.extend(outputs)
            self.cached_ui[node_id] = outcome.ui  # kept for the cache entry made when it resolves
            return True
        self._finish(node_id, ctx, outcome.outputs, outcome.ui)
        return False

    def _finish(self, node_id: str, ctx: NodeContext, outputs: list[list[Any]], ui: dict | None) -> None:
        """Store a node's outputs for this run and the cache, and mark it finished."""
        self.values[node_id] = outputs
        self.fresh.add(node_id)
        self.done.append(node_id)
        self.log.node_state(node_id, "finished", ctx.total, ctx.total)
        self.executor.cache.put(self.signatures.get(node_id, f"run:{node_id}"), CacheEntry(outputs, ui))

    def _ask_lazy(self, node_id: str, schema: NodeSchema, instance: Any, data: dict[str, list[Any]]) -> bool:
        """Ask ``check_lazy_status``; add the unevaluated links it wants as dependencies."""
        asked = self.asked.setdefault(node_id, set())
        inputs = self.prompt[node_id].get("inputs") or {}
        added = False
        for name in lazy_requests(schema, instance, data):
            link = inputs.get(name)
            if name in asked or not is_link(link) or link[0] in self.values:
                continue
            if link[0] not in self.prompt:
                raise KeyError(f"input '{name}' links to node '{link[0]}', not in the prompt")
            asked.add(name)
            self.deps[node_id].append(link[0])
            added = True
        return added

    def _info(self, schema: NodeSchema) -> ClassInfo:
        info = self.infos.get(schema.name)
        if info is None:
            info = self.infos[schema.name] = ClassInfo.of(schema)
        return info

    def _instance(self, node_id: str, schema: NodeSchema) -> Any:
        key = (node_id, schema.name)
        if key not in self.instances:
            self.instances[key] = schema.behaviour.new_instance()
        return self.instances[key]

    def _replay(self, node_id: str) -> None:
        """A cached output node: resend its ``executed`` and mark it finished."""
        ui = self.cached_ui.get(node_id)
        self.log.executed(node_id, ui)
        if ui:
            self.result.outputs[node_id] = ui
            self.result.meta[node_id] = self._meta(node_id)
        self.log.node_state(node_id, "finished", 1, 1)
        self.fresh.add(node_id)
        self.done.append(node_id)

    def _record_ui(self, node_id: str, ui: dict) -> None:
        self.result.outputs[node_id] = ui
        self.result.meta[node_id] = self._meta(node_id)
        self.log.executed(node_id, ui)

    def _meta(self, node_id: str) -> dict[str, Any]:
        display, parent, real = self.expansions.display(node_id)
        return {"node_id": node_id, "display_node": display, "parent_node": parent, "real_node_id": real}

    # -- endings ---------------------------------------------------------------------------
    def _node_type(self, node_id: str | None) -> str | None:
        node = self.prompt.get(node_id) if node_id is not None else None
        return node.get("class_type") if isinstance(node, dict) else None

    def _failed(self, failure: _NodeError) -> None:
        exc = failure.exc
        exception_type = getattr(exc, "comfy_type", None) or full_type_name(type(exc))
        node_id = self.expansions.display(failure.node_id)[2] if failure.node_id is not None else None
        self.result.status = "error"
        self.result.error = self.log.message("execution_error", {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": self._node_type(node_id),
            "executed": list(self.done), "exception_message": str(exc), "exception_type": exception_type,
            "traceback": traceback.format_tb(exc.__traceback__), "current_inputs": format_inputs(failure.inputs),
            "current_outputs": list(self.prompt)})

    def _interrupted(self, node_id: str | None) -> None:
        if node_id is not None:
            node_id = self.expansions.display(node_id)[2]
        self.result.status = "interrupted"
        self.result.error = self.log.message("execution_interrupted", {
            "prompt_id": self.prompt_id, "node_id": node_id, "node_type": self._node_type(node_id),
            "executed": list(self.done)})


def _interrupted_at(node_id: str) -> ExecutionInterrupted:
    exc = ExecutionInterrupted("Processing interrupted")
    exc.node_id = node_id  # type: ignore[attr-defined]
    return exc

