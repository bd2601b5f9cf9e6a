"""Event order and payloads of one prompt (PROTOCOL.md sections 3.2 and 3.3)."""

from __future__ import annotations

from typing import Any

from toy_nodes import make_registry

from graph.executor import Executor


def _record(executor: Executor, prompt: dict[str, Any], prompt_id: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    executor.run(prompt, prompt_id, sink=lambda event, data: events.append((event, data)))
    return events


def _about(event: str, data: dict[str, Any]) -> str:
    """Which node an event is about ("" for prompt-level events)."""
    if event == "progress_state":
        return next(iter(data["nodes"]))
    return data.get("node") or data.get("node_id") or ""


PROMPT = {
    "1": {"class_type": "Steps", "inputs": {"steps": 2, "previews": True}},
    "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
}


def test_event_order_for_executed_nodes() -> None:
    """start, cached, then per node: running state, executing, progress steps, executed, finished; success."""
    events = _record(Executor(make_registry()), PROMPT, "p")
    summary = [(event, _about(event, data)) for event, data in events]
    assert summary == [
        ("execution_start", ""),
        ("execution_cached", ""),
        ("progress_state", "1"), ("executing", "1"),
        ("progress", "1"), ("progress_state", "1"), ("preview", "1"),
        ("progress", "1"), ("progress_state", "1"), ("preview", "1"),
        ("progress_state", "1"),
        ("progress_state", "2"), ("executing", "2"), ("executed", "2"), ("progress_state", "2"),
        ("execution_success", ""),
    ]
    assert not any(e == "executing" and d["node"] is None for e, d in events)  # the server sends that one


def test_event_payloads() -> None:
    """Each payload has ComfyUI's keys; progress_state carries only the node that changed."""
    events = _record(Executor(make_registry()), PROMPT, "p")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event, data in events:
        by_name.setdefault(event, []).append(data)
    assert set(by_name["execution_start"][0]) == {"prompt_id", "timestamp"}
    assert by_name["execution_cached"][0]["nodes"] == [] and by_name["execution_cached"][0]["prompt_id"] == "p"
    assert by_name["executing"][0] == {"node": "1", "display_node": "1", "prompt_id": "p"}
    assert by_name["progress"][1] == {"value": 2, "max": 2, "prompt_id": "p", "node": "1"}
    assert by_name["preview"][0] == {"prompt_id": "p", "node_id": "1", "display_node_id": "1", "preview": "preview 1"}
    assert by_name["progress_state"][1] == {"prompt_id": "p", "nodes": {"1": {
        "value": 1, "max": 2, "state": "running", "node_id": "1", "prompt_id": "p", "display_node_id": "1",
        "parent_node_id": None, "real_node_id": "1"}}}
    assert all(len(d["nodes"]) == 1 for d in by_name["progress_state"])
    finished = by_name["progress_state"][3]["nodes"]["1"]
    assert (finished["state"], finished["value"], finished["max"]) == ("finished", 2, 2)
    assert by_name["executed"] == [{"node": "2", "display_node": "2", "output": {"text": ["2"]}, "prompt_id": "p"}]
    assert set(by_name["execution_success"][0]) == {"prompt_id", "timestamp"}


def test_cached_output_node_replays_executed_and_finished_only() -> None:
    """On an unchanged re-run the output node sends executed + progress_state, and nothing else runs."""
    executor = Executor(make_registry())
    _record(executor, PROMPT, "p1")
    events = _record(executor, PROMPT, "p2")
    assert [e for e, _ in events] == [
        "execution_start", "execution_cached", "executed", "progress_state", "execution_success"]
    assert events[1][1]["nodes"] == ["1", "2"]
    assert events[2][1] == {"node": "2", "display_node": "2", "output": {"text": ["2"]}, "prompt_id": "p2"}
    assert events[3][1]["nodes"]["2"]["state"] == "finished"


def test_a_raising_sink_does_not_break_the_run() -> None:
    """Listeners are not the prompt: a sink that raises is ignored."""
    def sink(event: str, data: dict[str, Any]) -> None:
        raise RuntimeError("listener gone")

    assert Executor(make_registry()).run(PROMPT, "p", sink=sink).status == "success"
