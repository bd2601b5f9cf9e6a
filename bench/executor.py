"""Executor and validation cost on large graphs of pure nodes.

Two graph shapes of ``--nodes`` nodes each, built from ``PrimitiveInt``, ``IntMath`` and
``PreviewAny`` (the real nodes from ``nodes.registry`` when present, else stand-ins with
the same names and inputs):

- ``chain``: an Int, then IntMath nodes each taking the previous one, then a preview;
- ``lattice``: a diamond lattice ``--width`` nodes wide, each IntMath taking two nodes
  of the layer before (a diamond at every step), previews on the last layer.

Prints one JSON line per graph: ``nodes``, ``validate_ms``, ``first_run_ms``,
``cached_rerun_ms`` (unchanged prompt, all cache hits), ``one_change_rerun_ms`` (one
constant changed half-way down, so about half the graph re-runs; ``one_change_executed``
says how many nodes did), ``node_fn_ms`` (time inside node functions during the first
run) and ``overhead_us_per_node`` (first run minus node functions, per node); the
``*_cpu_ms`` twins are process CPU time, steadier than wall time on a busy machine. Usage::

    python bench/executor.py --nodes 1000
    python bench/executor.py --nodes 10000
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph.executor import Executor
from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry
from graph.validate import validate_prompt

BIG = 2**63 - 1


def standin_registry() -> Registry:
    """Stand-ins for the pure nodes, used only when ``nodes.registry`` is not there."""
    def int_in(name: str) -> InputSpec:
        return InputSpec(name, "INT", options={"default": 0, "min": -BIG, "max": BIG})

    ops = ("add", "sub", "mul", "max", "min")
    math_ops = {"add": int.__add__, "sub": int.__sub__, "mul": int.__mul__, "max": max, "min": min}
    return Registry({s.name: s for s in (
        NodeSchema("PrimitiveInt", (int_in("value"),), (OutputSpec("INT", "INT"),),
                   NodeBehaviour(lambda i, c, kw: (kw["value"],))),
        NodeSchema("IntMath", (int_in("a"), int_in("b"), InputSpec("op", "COMBO", choices=ops)),
                   (OutputSpec("INT", "INT"),),
                   NodeBehaviour(lambda i, c, kw: (math_ops[kw["op"]](kw["a"], kw["b"]),))),
        NodeSchema("PreviewAny", (InputSpec("source", "*"),), (),
                   NodeBehaviour(lambda i, c, kw: {"ui": {"text": [str(kw["source"])]}}), output_node=True),
    )})


def load_registry() -> tuple[Registry, str]:
    """The real node registry if it exists, else the stand-ins; and which one it is."""
    try:
        from nodes.registry import build_registry
    except ImportError:
        return standin_registry(), "standin"
    return build_registry(), "nodes.registry"


class Timed:
    """Wraps every node function of a registry to add up the time spent inside them."""

    def __init__(self, registry: Registry) -> None:
        self.seconds = 0.0
        self.registry = Registry({name: self._wrap(schema) for name, schema in registry.items()})

    def _wrap(self, schema: NodeSchema) -> NodeSchema:
        inner = schema.behaviour.execute

        def execute(instance: Any, ctx: Any, inputs: dict[str, Any]) -> Any:
            start = time.perf_counter()
            try:
                return inner(instance, ctx, inputs)
            finally:
                self.seconds += time.perf_counter() - start

        return dataclasses.replace(schema, behaviour=dataclasses.replace(schema.behaviour, execute=execute))


def chain_prompt(nodes: int) -> tuple[dict[str, Any], str]:
    """Int -> IntMath x (nodes - 2) -> PreviewAny; returns the prompt and the id to change half-way."""
    prompt: dict[str, Any] = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
    for i in range(2, nodes):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "op": "add"}}
    prompt[str(nodes)] = {"class_type": "PreviewAny", "inputs": {"source": [str(nodes - 1), 0]}}
    return prompt, str(nodes // 2)


def lattice_prompt(nodes: int, width: int) -> tuple[dict[str, Any], str]:
    """A diamond lattice: ``width`` Ints, IntMath layers each reading two nodes above, previews at the bottom."""
    prompt: dict[str, Any] = {}
    layers = max(1, (nodes - 2 * width) // width)
    for i in range(width):
        prompt[f"0.{i}"] = {"class_type": "PrimitiveInt", "inputs": {"value": i}}
    for layer in range(1, layers + 1):
        for i in range(width):
            above = f"{layer - 1}."
            prompt[f"{layer}.{i}"] = {"class_type": "IntMath", "inputs": {
                "a": [f"{above}{i}", 0], "b": [f"{above}{(i + 1) % width}", 0], "op": "max"}}
    for i in range(width):
        prompt[f"out.{i}"] = {"class_type": "PreviewAny", "inputs": {"source": [f"{layers}.{i}", 0]}}
    return prompt, f"0.{width // 2}"


class Clock:
    """Wall and CPU milliseconds of a block (CPU time is the fairer figure on a shared machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_ms = (time.perf_counter() - self.wall) * 1000
        self.cpu_ms = (time.process_time() - self.cpu) * 1000


def measure(name: str, prompt: dict[str, Any], change: str, registry: Registry, source: str) -> dict[str, Any]:
    """Validate, run, re-run unchanged and re-run after one change; timings in milliseconds."""
    timed = Timed(registry)
    with Clock() as validate:
        validation = validate_prompt(prompt, timed.registry)
    assert validation.ok, validation.error
    executor = Executor(timed.registry)
    with Clock() as first_clock:
        first = executor.run(validation.prompt, "first", validation.outputs, sink=lambda e, d: None)
    fn_ms = timed.seconds * 1000
    assert first.status == "success" and len(first.executed) == len(prompt), first.error
    with Clock() as cached_clock:
        cached = executor.run(validation.prompt, "cached", validation.outputs, sink=lambda e, d: None)
    assert cached.executed == []
    changed = copy.deepcopy(validation.prompt)
    node = changed[change]["inputs"]
    node["value" if "value" in node else "b"] = 1000
    with Clock() as one_clock:
        one = executor.run(changed, "changed", validation.outputs, sink=lambda e, d: None)
    return {
        "graph": name, "nodes": len(prompt), "registry": source, "validate_ms": round(validate.wall_ms, 2),
        "first_run_ms": round(first_clock.wall_ms, 2), "cached_rerun_ms": round(cached_clock.wall_ms, 2),
        "one_change_rerun_ms": round(one_clock.wall_ms, 2), "one_change_executed": len(one.executed),
        "node_fn_ms": round(fn_ms, 2),
        "overhead_us_per_node": round((first_clock.wall_ms - fn_ms) * 1000 / len(prompt), 2),
        "validate_cpu_ms": round(validate.cpu_ms, 2), "first_run_cpu_ms": round(first_clock.cpu_ms, 2),
        "cached_rerun_cpu_ms": round(cached_clock.cpu_ms, 2), "one_change_rerun_cpu_ms": round(one_clock.cpu_ms, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one JSON line per graph."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes per graph (default 1000)")
    parser.add_argument("--width", type=int, default=10, help="lattice width (default 10)")
    args = parser.parse_args(argv)
    if args.nodes < 3 or args.width < 1:
        parser.error("--nodes must be at least 3 and --width at least 1")
    registry, source = load_registry()
    for name, (prompt, change) in (("chain", chain_prompt(args.nodes)),
                                   ("lattice", lattice_prompt(args.nodes, args.width))):
        print(json.dumps(measure(name, prompt, change, registry, source)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
