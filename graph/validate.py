"""Prompt validation with ComfyUI's results (PROTOCOL.md sections 2.2-2.5).

:func:`validate_prompt` picks the output nodes, validates each through its linked
ancestors (memoised, iteratively: a 10,000-node chain is fine) and returns a
:class:`ValidationResult`: ``ok`` when at least one output validated, the top-level
error otherwise, ComfyUI-shaped ``node_errors`` either way, and the prompt with its
constants converted. It never raises for bad input.

Where ComfyUI has no rule of its own we chose:

- **Cycles** (which make ComfyUI's recursion fail): every node on the cycle gets an own
  ``exception_during_validation`` entry whose ``details`` spell the cycle and whose
  ``exception_type`` is ``graph.DependencyCycleError``; the outputs behind it fail.
- **Dangling links** (to a node id not in the prompt, or to an output slot the source
  does not have): an own ``exception_during_validation`` entry on the node holding the
  link, naming the input and the missing target (``exception_type`` ``KeyError`` /
  ``IndexError``, as ComfyUI's lookup would raise).
- ``dependent_outputs`` lists the failed outputs whose validation reached the node
  (ComfyUI appends every failed output to every failed node seen so far).
- A prompt that is not a JSON object gives an ``invalid_prompt`` error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graph.schema import InputSpec, NodeSchema, Registry
from graph.validate_inputs import NodeCheck, check_node, error_entry, exception_entry, input_config

CYCLE_TYPE = "graph.DependencyCycleError"


@dataclass
class ValidationResult:
    """What validation found (the body of a 400, or the outputs to queue)."""

    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any]
    outputs: list[str] = field(default_factory=list)
    prompt: dict[str, Any] = field(default_factory=dict)

    def response_body(self) -> dict[str, Any]:
        """The JSON body of a failed ``POST /prompt``: ``{"error": ..., "node_errors": ...}``."""
        return {"error": self.error, "node_errors": self.node_errors}


def validate_prompt(prompt: Any, registry: Registry,
                    partial_execution_targets: list[str] | None = None) -> ValidationResult:
    """Validate an API prompt like ComfyUI's ``validate_prompt`` (see the module docstring)."""
    try:
        return _validate(prompt, registry, partial_execution_targets)
    except Exception as exc:  # a bug here must still become an answer, not a 500
        error = exception_entry("exception_during_validation", "Exception when validating node", exc)
        return ValidationResult(False, error, {}, [], prompt if isinstance(prompt, dict) else {})


def _validate(prompt: Any, registry: Registry, targets: list[str] | None) -> ValidationResult:
    if not isinstance(prompt, dict):
        error = error_entry("invalid_prompt", "Cannot execute because the prompt is not a JSON object.",
                            type(prompt).__name__)
        return ValidationResult(False, error, {}, [], {})
    # Shallow copies: conversions are written into these, the caller's prompt stays as sent.
    coerced: dict[str, Any] = {}
    schemas: dict[str, NodeSchema] = {}
    outputs: list[str] = []
    wanted = set(targets) if targets is not None else None
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _fail(prompt, "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                         f"Node ID '#{node_id}'")
        class_type = node["class_type"]
        schema = registry.get(class_type) if isinstance(class_type, str) else None
        if schema is None:
            return _fail(prompt, "invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                         f"Node ID '#{node_id}'")
        schemas[node_id] = schema
        inputs = node.get("inputs")
        coerced[node_id] = {**node, "inputs": dict(inputs) if isinstance(inputs, dict) else {}}
        if schema.output_node and (wanted is None or node_id in wanted):
            outputs.append(node_id)
    if not outputs:
        return _fail(prompt, "prompt_no_outputs", "Prompt has no outputs", "")

    walker = _Walker(coerced, schemas)
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        ok, reasons = walker.validate(output)
        if ok:
            good.append(output)
            continue
        failed.append((output, reasons))
        for node_id in walker.failed_reached_from(output):
            errors = walker.results[node_id][1]
            if not errors:
                continue  # invalid only because of something upstream: not listed
            entry = node_errors.setdefault(node_id, {"errors": errors, "dependent_outputs": [],
                                                     "class_type": coerced[node_id]["class_type"]})
            entry["dependent_outputs"].append(output)
    node_errors = {n: node_errors[n] for n in walker.results if n in node_errors}  # ComfyUI's order
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        error = error_entry("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, node_errors, [], coerced)
    return ValidationResult(True, None, node_errors, good, coerced)


def _fail(prompt: dict[str, Any], type_: str, message: str, details: str) -> ValidationResult:
    return ValidationResult(False, error_entry(type_, message, details), {}, [], prompt)


class _Walker:
    """Validates nodes depth-first through their good links, memoising results, with an explicit stack."""

    def __init__(self, prompt: dict[str, Any], schemas: Mapping[str, NodeSchema]) -> None:
        self.prompt = prompt
        self.schemas = schemas
        #: node id -> (valid, own errors), in the order nodes finished (ComfyUI's ``validated``).
        self.results: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        self.checks: dict[str, NodeCheck] = {}

    def validate(self, root: str) -> tuple[bool, list[dict[str, Any]]]:
        """Validate ``root`` and everything it reaches; returns its (valid, own errors)."""
        if root in self.results:
            return self.results[root]
        # Each frame: node id, index of the next source to visit, and whether a source failed.
        stack: list[list[Any]] = [[root, 0, False]]
        on_path: dict[str, int] = {root: 0}
        self._start(root, None)
        while stack:
            frame = stack[-1]
            node_id = frame[0]
            sources = self.checks[node_id].sources
            pushed = False
            while frame[1] < len(sources):
                source = sources[frame[1]][3]
                frame[1] += 1
                if source in self.results:
                    frame[2] |= not self.results[source][0]
                    continue
                if source in on_path:
                    self._mark_cycle([f[0] for f in stack[on_path[source]:]])
                    frame[2] = True
                    continue
                self._start(source, (node_id, sources[frame[1] - 1]))
                on_path[source] = len(stack)
                stack.append([source, 0, False])
                pushed = True
                break
            if pushed:
                continue
            check = self.checks[node_id]
            self.results[node_id] = (not check.errors and not frame[2], check.errors)
            del on_path[node_id]
            stack.pop()
            if stack:
                stack[-1][2] |= not self.results[node_id][0]
        return self.results[root]

    def _start(self, node_id: str, parent: tuple[str, tuple[str, InputSpec, list[Any], str]] | None) -> None:
        """Run the node's own checks; an exception becomes ComfyUI's exception entry."""
        try:
            self.checks[node_id] = check_node(node_id, self.prompt[node_id]["inputs"], self.schemas[node_id],
                                              self.prompt, self.schemas)
        except Exception as exc:
            if parent is None:
                entry = exception_entry("exception_during_validation", "Exception when validating node", exc)
            else:
                name, spec, link, _source = parent[1]
                entry = exception_entry("exception_during_inner_validation", "Exception when validating inner node",
                                        exc, {"input_name": name, "input_config": input_config(spec),
                                              "linked_node": link})
                # ComfyUI's key order: the linked node goes last.
                entry["extra_info"]["linked_node"] = entry["extra_info"].pop("linked_node")
            self.checks[node_id] = NodeCheck(errors=[entry])

    def _mark_cycle(self, cycle: list[str]) -> None:
        """Give every node of a detected cycle an own error naming it."""
        path = " -> ".join([*cycle, cycle[0]])
        for node_id in cycle:
            errors = self.checks[node_id].errors
            if not any(e["extra_info"].get("exception_type") == CYCLE_TYPE for e in errors):
                errors.append(error_entry("exception_during_validation", "Exception when validating node",
                                          f"Dependency cycle detected: {path}",
                                          {"exception_type": CYCLE_TYPE, "traceback": []}))

    def failed_reached_from(self, output: str) -> list[str]:
        """The invalid nodes whose validation ``output`` reached (a valid node's ancestors are all valid)."""
        seen = {output}
        stack = [output]
        while stack:
            node_id = stack.pop()
            for _name, _spec, _link, source in self.checks[node_id].sources:
                if source not in seen and not self.results[source][0]:
                    seen.add(source)
                    stack.append(source)
        return list(seen)

