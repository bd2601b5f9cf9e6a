"""Node expansion: a node that returns a subgraph to run in its place (PROTOCOL.md section 5.5)."""

from __future__ import annotations

from typing import Any

from toy_nodes import make_registry

from graph.executor import Executor
from graph.schema import InputSpec, NodeBehaviour, NodeSchema, OutputSpec, Registry


def _expand(instance: Any, ctx: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """Builds Int(n) -> Add(+1) [-> Show], ids prefixed by the parent's id as GraphBuilder does."""
    prefix = f"{inputs['unique_id']}.0.0."
    graph: dict[str, Any] = {
        prefix + "1": {"class_type": "Int", "inputs": {"value": inputs["n"]}},
        prefix + "2": {"class_type": inputs["adder"], "inputs": {"a": [prefix + "1", 0], "b": 1}},
    }
    if inputs["show"]:
        graph[prefix + "3"] = {"class_type": "Show", "inputs": {"value": [prefix + "2", 0]}}
    if inputs["clash"]:
        graph["1"] = {"class_type": "Int", "inputs": {"value": 0}}
    return {"result": ([prefix + "2", 0], "plain"), "expand": graph}


def registry() -> Registry:
    reg = make_registry()
    reg.add(NodeSchema("Expander", (
        InputSpec("n", "INT"), InputSpec("show", "BOOLEAN"), InputSpec("adder", "STRING"),
        InputSpec("clash", "BOOLEAN"), InputSpec("unique_id", "UNIQUE_ID", "hidden")),
        (OutputSpec("INT", "INT"), OutputSpec("STRING", "STRING")), NodeBehaviour(_expand)))
    return reg


def prompt(show: bool = False, adder: str = "Add", clash: bool = False) -> dict[str, Any]:
    return {
        "1": {"class_type": "Int", "inputs": {"value": 0}},
        "2": {"class_type": "Expander", "inputs": {"n": 41, "show": show, "adder": adder, "clash": clash}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["2", 1]}},
    }


def test_expansion_runs_the_subgraph_and_resolves_the_result() -> None:
    """The parent's linked result becomes the subgraph's output; a plain value passes through."""
    executor = Executor(registry())
    events: list[tuple[str, dict[str, Any]]] = []
    result = executor.run(prompt(), "p", sink=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    assert result.outputs == {"3": {"text": ["42"]}, "4": {"text": ["plain"]}}
    assert result.executed == ["2", "2.0.0.1", "2.0.0.2", "3", "4"]
    executing = [(d["node"], d["display_node"]) for e, d in events if e == "executing"]
    assert executing == [("2", "2"), ("2.0.0.1", "2"), ("2.0.0.2", "2"), ("3", "3"), ("4", "4")]
    state = next(d["nodes"]["2.0.0.1"] for e, d in events if e == "progress_state" and "2.0.0.1" in d["nodes"])
    assert (state["display_node_id"], state["parent_node_id"], state["real_node_id"]) == ("2", "2", "2")
    assert executor.run(prompt(), "again").executed == []


def test_output_nodes_inside_an_expansion_run_with_their_meta() -> None:
    """An output node created by the expansion runs; its ui is keyed by its own id, shown on the parent."""
    result = Executor(registry()).run(prompt(show=True), "p")
    assert result.outputs["2.0.0.3"] == {"text": ["42"]}
    assert result.meta["2.0.0.3"] == {"node_id": "2.0.0.3", "display_node": "2", "parent_node": "2",
                                      "real_node_id": "2"}


def test_failure_inside_an_expansion_is_reported_on_the_real_node() -> None:
    """An ephemeral node that fails makes an execution_error naming the top-level node."""
    result = Executor(registry()).run(prompt(adder="Fail"), "p")
    assert result.status == "error"
    assert result.error["node_id"] == "2" and result.error["node_type"] == "Expander"
    assert result.error["exception_message"] == "boom 41"


def test_expansion_reusing_an_existing_id_is_an_error() -> None:
    """New node ids must be new."""
    result = Executor(registry()).run(prompt(clash=True), "p")
    assert result.status == "error" and result.error["exception_type"] == "graph.expansion.DuplicateNodeError"
