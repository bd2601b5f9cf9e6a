"""The executor on toy nodes: what runs, what is cached, lists, laziness, blocking, hidden inputs."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
import toy_nodes
from toy_nodes import chain, make_registry

from graph.executor import Executor, RunResult


class Events(list):
    """A sink that records ``(event, data)`` pairs."""

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.append((event, data))

    def names(self) -> list[str]:
        return [event for event, _ in self]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self if event == name]


def run(executor: Executor, prompt: dict[str, Any], sink: Events | None = None, **kw: Any) -> RunResult:
    return executor.run(copy.deepcopy(prompt), "p", sink=sink, **kw)


@pytest.fixture
def executor() -> Executor:
    return Executor(make_registry())


def test_first_run_runs_all_and_unchanged_rerun_runs_nothing(executor: Executor) -> None:
    """A re-run of the same prompt is all cache hits: nothing executes, the output ui is still reported."""
    prompt = chain(6)
    first = run(executor, prompt)
    assert first.status == "success"
    assert first.executed == ["1", "2", "3", "4", "5", "6"]
    assert first.outputs == {"6": {"text": ["4"]}}
    assert first.meta == {"6": {"node_id": "6", "display_node": "6", "parent_node": None, "real_node_id": "6"}}
    events = Events()
    again = run(executor, prompt, events)
    assert again.executed == []
    assert again.outputs == {"6": {"text": ["4"]}}
    assert events.of("execution_cached")[0]["nodes"] == ["1", "2", "3", "4", "5", "6"]
    assert [m[0] for m in again.messages] == ["execution_start", "execution_cached", "execution_success"]


def test_changed_leaf_widget_reruns_only_from_there(executor: Executor) -> None:
    """Changing the last Add's constant re-runs it and the output, nothing upstream."""
    prompt = chain(6)
    run(executor, prompt)
    prompt["5"]["inputs"]["b"] = 10
    result = run(executor, prompt)
    assert result.executed == ["5", "6"]
    assert result.outputs["6"] == {"text": ["13"]}


def test_changed_upstream_constant_reruns_everything_below(executor: Executor) -> None:
    """Changing the first node's value re-runs the whole chain."""
    prompt = chain(6)
    run(executor, prompt)
    prompt["1"]["inputs"]["value"] = 100
    assert run(executor, prompt).executed == ["1", "2", "3", "4", "5", "6"]


def test_is_changed_nan_always_reruns_and_file_fingerprint_follows_the_file(executor: Executor) -> None:
    """IS_CHANGED returning NaN re-runs the node (and its consumers) every time; a hash only when it changes."""
    prompt = {
        "1": {"class_type": "Int", "inputs": {"value": 1}},
        "2": {"class_type": "Volatile", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "Fingerprinted", "inputs": {"value": 7, "file": "a.png"}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
    }
    toy_nodes.FILES["a.png"] = "hash1"
    assert run(executor, prompt).executed == ["1", "2", "3", "4", "5"]
    assert run(executor, prompt).executed == ["2", "3"]
    toy_nodes.FILES["a.png"] = "hash2"
    assert run(executor, prompt).executed == ["2", "3", "4", "5"]


def test_lazy_input_left_unevaluated(executor: Executor) -> None:
    """Only the branch check_lazy_status asks for runs; the switch runs twice (asks, then computes)."""
    prompt = {
        "1": {"class_type": "Int", "inputs": {"value": 1}},
        "2": {"class_type": "Fail", "inputs": {"a": ["1", 0]}},  # would raise if evaluated
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 41}},
        "4": {"class_type": "Switch", "inputs": {"cond": True, "on_true": ["3", 0], "on_false": ["2", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
    }
    events = Events()
    result = run(executor, prompt, events)
    assert result.status == "success"
    assert result.executed == ["1", "3", "4", "5"]
    assert result.outputs["5"] == {"text": ["42"]}
    assert [d["node"] for d in events.of("executing")] == ["4", "1", "3", "4", "5"]


def test_lazy_input_from_cache_is_not_rerun(executor: Executor) -> None:
    """A lazy source whose result is cached is handed over at once; flipping the switch runs the other side."""
    prompt = {
        "1": {"class_type": "Int", "inputs": {"value": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 2}},
        "4": {"class_type": "Switch", "inputs": {"cond": True, "on_true": ["2", 0], "on_false": ["3", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
    }
    assert run(executor, prompt).executed == ["1", "2", "4", "5"]
    prompt["4"]["inputs"]["cond"] = False
    result = run(executor, prompt)
    assert result.executed == ["3", "4", "5"]
    assert result.outputs["5"] == {"text": ["3"]}


def test_list_output_is_mapped_over_and_list_input_gets_the_whole_list(executor: Executor) -> None:
    """OUTPUT_IS_LIST feeds one call per element; INPUT_IS_LIST gets them all; ui lists concatenate."""
    prompt = {
        "1": {"class_type": "Range", "inputs": {"count": 3}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 10}},
        "3": {"class_type": "Sum", "inputs": {"values": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = run(executor, prompt)
    assert result.outputs == {"4": {"text": ["33"]}, "5": {"text": ["10", "11", "12"]}}


def test_shorter_list_repeats_its_last_element(executor: Executor) -> None:
    """Lists of different lengths map by the longest, reusing the shorter one's last element."""
    prompt = {
        "1": {"class_type": "Range", "inputs": {"count": 4}},
        "2": {"class_type": "Range", "inputs": {"count": 2}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }
    assert run(executor, prompt).outputs["4"] == {"text": ["0", "2", "3", "4"]}


def test_error_event_payload(executor: Executor) -> None:
    """A raising node stops the prompt with a ComfyUI-shaped execution_error; earlier results stay cached."""
    prompt = {
        "1": {"class_type": "Int", "inputs": {"value": 3}},
        "2": {"class_type": "Fail", "inputs": {"a": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    events = Events()
    result = run(executor, prompt, events)
    assert result.status == "error"
    error = result.error
    assert list(error) == ["prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                           "traceback", "current_inputs", "current_outputs", "timestamp"]
    assert error["node_id"] == "2" and error["node_type"] == "Fail" and error["executed"] == ["1"]
    assert error["exception_message"] == "boom 3" and error["exception_type"] == "ValueError"
    assert any("boom" in line or "_fail" in line for line in error["traceback"])
    assert error["current_inputs"] == {"a": [3]}
    assert error["current_outputs"] == ["1", "2", "3"]
    assert events.names()[-2:] == ["progress_state", "execution_error"]
    assert events.of("progress_state")[-1]["nodes"]["2"]["state"] == "error"
    assert result.messages[-1] == ("execution_error", error)
    prompt["2"] = {"class_type": "Add", "inputs": {"a": ["1", 0]}}
    assert run(executor, prompt).executed == ["2", "3"]


def test_interrupt_during_progress(executor: Executor) -> None:
    """interrupt() makes the node's next progress call raise: execution_interrupted, nothing after it runs."""
    prompt = {
        "1": {"class_type": "Steps", "inputs": {"steps": 5}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    events = Events()

    def sink(event: str, data: dict[str, Any]) -> None:
        events(event, data)
        if event == "progress" and data["value"] == 2:
            executor.interrupt("someone else")  # not the running prompt: ignored
            executor.interrupt("p")

    result = executor.run(prompt, "p", sink=sink)
    assert result.status == "interrupted"
    assert result.error == {"prompt_id": "p", "node_id": "1", "node_type": "Steps", "executed": [],
                            "timestamp": result.error["timestamp"]}
    assert [d["value"] for d in events.of("progress")] == [1, 2]
    assert result.executed == []
    assert result.messages[-1][0] == "execution_interrupted"
    # The flag does not outlive the prompt: the next run completes.
    assert executor.run(prompt, "q").status == "success"


def test_interrupt_with_nothing_running_has_no_effect(executor: Executor) -> None:
    """An interrupt while idle is forgotten (ComfyUI clears the flag when a prompt starts)."""
    executor.interrupt()
    assert run(executor, chain(3)).status == "success"


def test_interrupt_between_nodes(executor: Executor) -> None:
    """Between nodes the flag is checked too: a node without progress calls stops the chain after it."""
    events = Events()

    def sink(event: str, data: dict[str, Any]) -> None:
        events(event, data)
        if event == "executing" and data["node"] == "2":
            executor.interrupt()

    result = executor.run(chain(5), "p", sink=sink)
    assert result.status == "interrupted"
    assert result.executed == ["1"]
    assert result.error["node_id"] == "2"


def test_execution_blocker_with_message_reports_and_continues(executor: Executor) -> None:
    """A blocker skips its consumers, reports one blocked execution_error, and the prompt still succeeds."""
    prompt = {
        "1": {"class_type": "Int", "inputs": {"value": 1}},
        "2": {"class_type": "Block", "inputs": {"value": ["1", 0], "block": True, "message": "stop here"}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }
    events = Events()
    result = run(executor, prompt, events)
    assert result.status == "success"
    assert result.outputs == {"5": {"text": ["1"]}}
    assert events.of("execution_error") == [{
        "prompt_id": "p", "node_id": "3", "node_type": "Add", "executed": ["1", "2"],
        "exception_message": "Execution Blocked: stop here", "exception_type": "ExecutionBlocked",
        "traceback": [], "current_inputs": [], "current_outputs": []}]
    assert "execution_error" not in [m[0] for m in result.messages]
    prompt["2"]["inputs"]["message"] = ""
    silent = Events()
    assert run(executor, prompt, silent).status == "success"
    assert silent.of("execution_error") == []


def test_hidden_inputs_and_unique_id_signature(executor: Executor) -> None:
    """UNIQUE_ID, PROMPT and EXTRA_PNGINFO are injected; UNIQUE_ID keeps identical nodes apart in the cache."""
    prompt = {
        "1": {"class_type": "Unique", "inputs": {}},
        "2": {"class_type": "Unique", "inputs": {}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    result = run(executor, prompt, extra_data={"extra_pnginfo": {"workflow": 1}})
    assert result.outputs["3"] == {"text": ["1:dict:{'workflow': 1}"]}
    assert result.outputs["4"] == {"text": ["2:dict:{'workflow': 1}"]}


def test_identical_subgraphs_share_cache_entries(executor: Executor) -> None:
    """Signatures ignore node ids: a copy of a computed subgraph under new ids is a cache hit."""
    run(executor, chain(4))
    renamed = {f"n{k}": {"class_type": v["class_type"], "inputs": {
        name: [f"n{x[0]}", x[1]] if isinstance(x, list) else x for name, x in v["inputs"].items()}}
        for k, v in chain(4).items()}
    result = run(executor, renamed)
    assert result.executed == []


def test_node_instances_persist_per_node_id_and_class() -> None:
    """Node instances live across prompts (classic), not with cache 'none'."""
    prompt = {"1": {"class_type": "Count", "inputs": {"tick": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    classic = Executor(make_registry())
    run(classic, prompt)
    prompt["1"]["inputs"]["tick"] = 2
    assert run(classic, prompt).outputs["2"] == {"text": ["2"]}
    none = Executor(make_registry(), cache="none")
    run(none, prompt)
    result = run(none, prompt)
    assert result.executed == ["1", "2"] and result.outputs["2"] == {"text": ["1"]}


def test_requested_outputs_limit_what_runs(executor: Executor) -> None:
    """With ``outputs`` given, only those outputs and their ancestors run."""
    prompt = {**chain(3), "9": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert run(executor, prompt, outputs=["9"]).executed == ["1", "9"]


@pytest.mark.parametrize("prompt", [
    {"1": {"class_type": "Nope", "inputs": {}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}},
    {"2": {"class_type": "Show", "inputs": {"value": ["404", 0]}}},
    {"1": {"class_type": "Add", "inputs": {"a": ["2", 0]}}, "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
     "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}},
    {"1": {"class_type": "Int", "inputs": {"value": 1}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 9]}}},
])
def test_unvalidated_odd_prompts_become_execution_errors(executor: Executor, prompt: dict[str, Any]) -> None:
    """run() never raises: an unknown class, a dangling link, a cycle or a bad slot is an execution_error."""
    result = run(executor, prompt)
    assert result.status == "error"
    assert result.messages[-1][0] == "execution_error"
    assert result.error["exception_message"]


def test_cycle_error_type(executor: Executor) -> None:
    """A cycle met at run time carries ComfyUI's exception type."""
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["2", 0]}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert run(executor, prompt).error["exception_type"] == "graph.DependencyCycleError"


def test_identical_subgraphs_in_one_prompt_run_once(executor: Executor) -> None:
    """Two copies of a chain under other ids in the same prompt: the second is served from the first."""
    prompt = {**chain(3), "a": {"class_type": "Int", "inputs": {"value": 0}},
              "b": {"class_type": "Add", "inputs": {"a": ["a", 0], "b": 1}},
              "c": {"class_type": "Show", "inputs": {"value": ["b", 0]}}}
    result = run(executor, prompt)
    assert result.executed == ["1", "2", "3"]
    assert result.outputs == {"3": {"text": ["1"]}, "c": {"text": ["1"]}}


def test_interrupt_from_another_thread(executor: Executor) -> None:
    """A worker thread runs; the main thread interrupts it mid-node (the flag is checked at each step)."""
    started = threading.Event()
    results: list[RunResult] = []

    def sink(event: str, data: dict[str, Any]) -> None:
        if event == "progress":
            started.set()

    prompt = {"1": {"class_type": "Steps", "inputs": {"steps": 10_000_000}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    worker = threading.Thread(target=lambda: results.append(executor.run(prompt, "p", sink=sink)))
    worker.start()
    assert started.wait(10)
    executor.interrupt()
    worker.join(10)
    assert not worker.is_alive()
    assert results[0].status == "interrupted" and results[0].error["node_id"] == "1"
