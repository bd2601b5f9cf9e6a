"""``/prompt``, ``/queue``, ``/history``, ``/interrupt``, ``/free`` over HTTP, with ComfyUI's shapes."""

from __future__ import annotations

from typing import Any

import pytest
from server_kit import simple_prompt, wait_history, wait_running

ERROR_KEYS = {"type", "message", "details", "extra_info"}


def sleep_prompt(seconds: float, value: int = 0) -> dict[str, Any]:
    """One NoodleSleep output node."""
    return {"1": {"class_type": "NoodleSleep", "inputs": {"seconds": seconds, "value": value}}}


async def test_post_prompt_success_shape(client) -> None:
    for i, path in enumerate(("/prompt", "/api/prompt")):
        resp = await client.post(path, json={"prompt": simple_prompt(), "prompt_id": f"id{i}"})
        assert resp.status == 200
        body = await resp.json()
        assert set(body) == {"prompt_id", "number", "node_errors"}
        assert body["prompt_id"] == f"id{i}" and body["node_errors"] == {}
    numbers = [(await wait_history(client, f"id{i}"))["prompt"][0] for i in range(2)]
    assert numbers == [0, 1]  # the server counter


async def _post_error(client, body: Any) -> dict[str, Any]:
    resp = await client.post("/prompt", json=body)
    assert resp.status == 400
    data = await resp.json()
    assert set(data) == {"error", "node_errors"}
    assert set(data["error"]) == ERROR_KEYS
    return data


async def test_no_prompt(client) -> None:
    data = await _post_error(client, {"client_id": "x"})
    assert data["error"]["type"] == "no_prompt"
    assert data["error"]["message"] == "No prompt provided" and data["node_errors"] == {}


async def test_missing_class_type(client) -> None:
    data = await _post_error(client, {"prompt": {"7": {"inputs": {}}}})
    assert data["error"]["type"] == "invalid_prompt"
    assert data["error"]["message"] == "Cannot execute because a node is missing the class_type property."
    assert data["error"]["details"] == "Node ID '#7'"


async def test_unknown_class(client) -> None:
    data = await _post_error(client, {"prompt": {"3": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert data["error"]["type"] == "invalid_prompt"
    assert data["error"]["message"] == "Cannot execute because node NoSuchNode does not exist."


async def test_prompt_no_outputs(client) -> None:
    data = await _post_error(client, {"prompt": {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}}}})
    assert data["error"]["type"] == "prompt_no_outputs"
    assert data["error"]["message"] == "Prompt has no outputs"


NODE_ERROR_CASES = [
    ({"1": {"class_type": "PreviewAny", "inputs": {}}}, "1", "required_input_missing"),
    ({"1": {"class_type": "NoodleSleep", "inputs": {"seconds": -1, "value": 0}}}, "1", "value_smaller_than_min"),
    ({"1": {"class_type": "NoodleSleep", "inputs": {"seconds": 9999, "value": 0}}}, "1", "value_bigger_than_max"),
    ({"1": {"class_type": "NoodleSleep", "inputs": {"seconds": "abc", "value": 0}}}, "1", "invalid_input_type"),
    (
        {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 2, "op": "nope"}},
         "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
        "1",
        "value_not_in_list",
    ),
    (
        {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
         "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0, 9]}}},
        "2",
        "bad_linked_input",
    ),
    (
        {"1": {"class_type": "PrimitiveString", "inputs": {"value": "a"}},
         "2": {"class_type": "NoodleSleep", "inputs": {"seconds": 0, "value": ["1", 0]}}},
        "2",
        "return_type_mismatch",
    ),
    ({"1": {"class_type": "TestEven", "inputs": {"n": 3}}}, "1", "custom_validation_failed"),
    ({"2": {"class_type": "PreviewAny", "inputs": {"source": ["99", 0]}}}, "2", "exception_during_validation"),
]


@pytest.mark.parametrize(("prompt", "node", "error_type"), NODE_ERROR_CASES, ids=[c[2] for c in NODE_ERROR_CASES])
async def test_node_error_shapes(client, prompt, node, error_type) -> None:
    data = await _post_error(client, {"prompt": prompt})
    assert data["error"]["type"] == "prompt_outputs_failed_validation"
    assert data["error"]["message"] == "Prompt outputs failed validation"
    entry = data["node_errors"][node]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["class_type"] == prompt[node]["class_type"]
    assert [e["type"] for e in entry["errors"]] == [error_type]
    assert all(set(e) == ERROR_KEYS for e in entry["errors"])


async def test_partly_valid_prompt_is_queued_with_node_errors(client) -> None:
    prompt = {**simple_prompt(), "9": {"class_type": "PreviewAny", "inputs": {}}}
    resp = await client.post("/prompt", json={"prompt": prompt})
    assert resp.status == 200
    body = await resp.json()
    assert list(body["node_errors"]) == ["9"]
    entry = await wait_history(client, body["prompt_id"])
    assert entry["prompt"][4] == ["2"]


async def test_malformed_bodies_are_400(client) -> None:
    for body in (b"{not json", b"[1, 2]", b'"text"'):
        resp = await client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        assert set((await resp.json())["error"]) == ERROR_KEYS
    for bad in ({"prompt": [1, 2]}, {"prompt": {}, "number": "x"}, {"prompt": {}, "extra_data": 3},
                {"prompt": {}, "partial_execution_targets": "1"}):
        assert (await client.post("/prompt", json=bad)).status == 400


async def test_extra_data_and_sensitive_keys(client) -> None:
    body = {
        "prompt": simple_prompt(),
        "client_id": "cid",
        "extra_data": {"extra_pnginfo": {"workflow": {"id": "wf-1"}}, "api_key_comfy_org": "SECRET"},
    }
    pid = (await (await client.post("/prompt", json=body)).json())["prompt_id"]
    entry = await wait_history(client, pid)
    extra = entry["prompt"][3]
    assert extra["client_id"] == "cid" and isinstance(extra["create_time"], int)
    assert "api_key_comfy_org" not in extra
    text = await (await client.get("/history")).text() + await (await client.get(f"/api/jobs/{pid}")).text()
    assert "SECRET" not in text
    job = await (await client.get(f"/api/jobs/{pid}")).json()
    assert job["workflow_id"] == "wf-1" and job["status"] == "completed"
    assert job["workflow"]["prompt"]["1"]["inputs"]["value"] == "hello"


async def test_partial_execution_targets(client) -> None:
    prompt = {**simple_prompt(), "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    body = {"prompt": prompt, "partial_execution_targets": ["3"]}
    pid = (await (await client.post("/prompt", json=body)).json())["prompt_id"]
    entry = await wait_history(client, pid)
    assert list(entry["outputs"]) == ["3"]


async def test_queue_priority_pause_delete_and_clear(client) -> None:
    assert (await (await client.post("/queue", json={"pause": True})).json()) == {"paused": True}
    ids = []
    for i, extra in enumerate([{}, {}, {"front": True}, {"number": -100}]):
        resp = await client.post("/prompt", json={"prompt": sleep_prompt(0, i), **extra})
        ids.append((await resp.json())["prompt_id"])
    queue = await (await client.get("/api/queue")).json()
    assert queue["queue_running"] == []
    assert len(queue["queue_pending"]) == 4 and all(len(item) == 5 for item in queue["queue_pending"])
    assert (await (await client.get("/prompt")).json()) == {"exec_info": {"queue_remaining": 4}}
    assert (await client.post("/queue", json={"delete": [ids[1]]})).status == 200
    assert (await (await client.post("/queue", json={"resume": True})).json()) == {"paused": False}
    for pid in (ids[0], ids[2], ids[3]):
        await wait_history(client, pid)
    order = list(await (await client.get("/history")).json())
    assert order == [ids[3], ids[2], ids[0]]  # number -100, then front, then the normal one
    assert (await client.get(f"/history/{ids[1]}")).status == 200
    assert (await (await client.get(f"/history/{ids[1]}")).json()) == {}
    await client.post("/queue", json={"pause": True})
    await client.post("/prompt", json={"prompt": sleep_prompt(0)})
    assert (await client.post("/queue", json={"clear": True})).status == 200
    assert (await (await client.get("/queue")).json())["queue_pending"] == []


async def test_running_item_in_queue_and_free(client) -> None:
    pid = (await (await client.post("/prompt", json={"prompt": sleep_prompt(0.6)})).json())["prompt_id"]
    await wait_running(client, pid)
    queue = await (await client.get("/queue")).json()
    assert queue["queue_running"][0][1] == pid
    job = await (await client.get(f"/api/jobs/{pid}")).json()
    assert job["status"] == "in_progress"
    assert (await client.post("/free", json={"unload_models": True, "free_memory": True})).status == 200
    await wait_history(client, pid)


async def test_history_paging_delete_and_clear(client) -> None:
    ids = []
    for i in range(4):
        resp = await client.post("/prompt", json={"prompt": simple_prompt(str(i)), "prompt_id": f"h{i}"})
        ids.append((await resp.json())["prompt_id"])
    for pid in ids:
        await wait_history(client, pid)
    assert list(await (await client.get("/history?max_items=2")).json()) == ["h2", "h3"]
    assert list(await (await client.get("/history?max_items=2&offset=1")).json()) == ["h1", "h2"]
    assert (await client.get("/history?max_items=x")).status == 400
    await client.post("/history", json={"delete": ["h0"]})
    assert list(await (await client.get("/history")).json()) == ["h1", "h2", "h3"]
    await client.post("/history", json={"clear": True})
    assert await (await client.get("/history")).json() == {}


async def test_duplicate_prompt_id_while_queued_is_refused(client) -> None:
    await client.post("/queue", json={"pause": True})
    assert (await client.post("/prompt", json={"prompt": simple_prompt(), "prompt_id": "dup"})).status == 200
    resp = await client.post("/prompt", json={"prompt": simple_prompt(), "prompt_id": "dup"})
    assert resp.status == 400


async def test_jobs_filters_and_errors(client) -> None:
    for i in range(3):
        await client.post("/prompt", json={"prompt": simple_prompt(str(i)), "prompt_id": f"j{i}"})
    for i in range(3):
        await wait_history(client, f"j{i}")
    body = await (await client.get("/api/jobs?status=completed,cancelled&limit=2&sort_order=asc")).json()
    assert [j["id"] for j in body["jobs"]] == ["j0", "j1"]
    assert body["pagination"] == {"offset": 0, "limit": 2, "total": 3, "has_more": True}
    for query in ("status=bogus", "sort_by=size", "sort_order=up", "limit=0", "limit=x", "offset=y"):
        resp = await client.get(f"/api/jobs?{query}")
        assert resp.status == 400 and "error" in await resp.json()
    assert (await client.get("/api/jobs/unknown")).status == 404
    assert (await client.get("/jobs")).status == 404  # jobs exist only under /api
