"""Large prompts: nothing recursive, nothing quadratic."""

from __future__ import annotations

import pytest
from toy_nodes import chain, make_registry

from graph.dag import DependencyCycleError, build_graph, kahn_order, needed_nodes, topological_order
from graph.executor import Executor
from graph.validate import validate_prompt

N = 10_000


def test_ten_thousand_node_chain_validates_runs_and_reruns_from_cache() -> None:
    """A 10,000-node chain: valid, every node runs once, events stay per-node, an unchanged re-run runs nothing."""
    registry = make_registry()
    validation = validate_prompt(chain(N), registry)
    assert validation.ok and validation.outputs == [str(N)]
    executor = Executor(registry)
    count = {"events": 0, "state_nodes": 0}

    def sink(event: str, data: dict) -> None:
        count["events"] += 1
        if event == "progress_state":
            count["state_nodes"] += len(data["nodes"])

    first = executor.run(validation.prompt, "a", validation.outputs, sink=sink)
    assert first.status == "success" and len(first.executed) == N
    assert first.outputs[str(N)] == {"text": [str(N - 2)]}
    # Per node: running state, executing, finished state (+ executed for the output); delta states only.
    assert count["events"] == 3 * N + 1 + 3
    assert count["state_nodes"] == 2 * N
    again = executor.run(validation.prompt, "b", validation.outputs)
    assert again.executed == [] and again.outputs == first.outputs


def test_dag_helpers_on_a_long_chain() -> None:
    """The networkx view: ancestors of the output and a topological order, without recursion."""
    prompt = chain(N)
    graph = build_graph(prompt)
    assert needed_nodes(graph, [str(N)]) == set(prompt)
    order = topological_order(graph)
    assert order[0] == "1" and order[-1] == str(N)
    assert needed_nodes(graph, ["3"]) == {"1", "2", "3"}


def test_cycles_in_the_dag_helpers() -> None:
    """topological_order names a cycle; kahn_order sets cycle nodes (and what hangs below) aside."""
    prompt = chain(6)
    prompt["2"]["inputs"]["a"] = ["4", 0]  # 2 -> 3 -> 4 -> 2
    with pytest.raises(DependencyCycleError, match="Dependency cycle detected"):
        topological_order(build_graph(prompt))
    ordered, stuck = kahn_order(prompt)
    assert ordered == ["1"] and stuck == ["2", "3", "4", "5", "6"]
