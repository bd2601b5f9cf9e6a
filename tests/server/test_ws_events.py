"""The websocket protocol over a real socket: greeting, event order, addressing, previews."""

from __future__ import annotations

import asyncio
import io
import json
import struct

from PIL import Image
from server_kit import collect_until_done, simple_prompt, wait_history, wait_running


async def test_first_message_is_status_with_sid(client) -> None:
    ws = await client.ws_connect("/ws?clientId=me")
    first = await ws.receive_json(timeout=5)
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "me"}}
    ws2 = await client.ws_connect("/api/ws")
    second = await ws2.receive_json(timeout=5)
    assert len(second["data"]["sid"]) == 32  # a fresh uuid4 hex when no clientId is given


async def test_full_event_sequence_of_a_pure_prompt(client) -> None:
    """PROTOCOL 3.3: status, status, start, cached, per node events, success, status, executing null."""
    ws = await client.ws_connect("/ws?clientId=c1")
    await ws.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": simple_prompt(), "client_id": "c1"})
    assert resp.status == 200
    pid = (await resp.json())["prompt_id"]
    messages = await collect_until_done(ws, pid)
    kinds = [m["type"] for m in messages]
    assert kinds == [
        "status", "status",
        "execution_start", "execution_cached",
        "progress_state", "executing", "progress_state",
        "progress_state", "executing", "executed", "progress_state",
        "execution_success", "status", "executing",
    ]
    assert messages[0]["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert messages[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    assert messages[5]["data"] == {"node": "1", "display_node": "1", "prompt_id": pid}
    assert messages[9]["data"]["output"] == {"text": ["hello"]}
    assert all(m["data"]["prompt_id"] == pid for m in messages[2:] if m["type"] != "status")
    # the completion signal comes after the history entry exists
    history = await (await client.get(f"/history/{pid}")).json()
    assert history[pid]["status"]["status_str"] == "success"


async def test_events_without_client_id(client) -> None:
    """No client_id: execution_* and executing are not sent; progress_state is broadcast."""
    ws = await client.ws_connect("/ws?clientId=watcher")
    await ws.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": simple_prompt("anon")})
    pid = (await resp.json())["prompt_id"]
    await wait_history(client, pid)
    await asyncio.sleep(0.1)
    kinds = []
    while True:
        try:
            msg = await ws.receive(timeout=0.3)
        except TimeoutError:
            break
        kinds.append(json.loads(msg.data)["type"])
    assert "progress_state" in kinds
    assert not {"execution_start", "executing", "executed", "execution_success"} & set(kinds)


async def test_events_go_only_to_the_submitting_client(client) -> None:
    mine = await client.ws_connect("/ws?clientId=mine")
    other = await client.ws_connect("/ws?clientId=other")
    await mine.receive_json(timeout=5)
    await other.receive_json(timeout=5)
    resp = await client.post("/prompt", json={"prompt": simple_prompt(), "client_id": "mine"})
    pid = (await resp.json())["prompt_id"]
    await collect_until_done(mine, pid)
    await asyncio.sleep(0.1)
    seen = []
    while True:
        try:
            msg = await other.receive(timeout=0.3)
        except TimeoutError:
            break
        seen.append(json.loads(msg.data)["type"])
    assert set(seen) == {"status"}  # queue changes are broadcast, execution events are not


async def test_feature_flags_negotiation(client) -> None:
    ws = await client.ws_connect("/ws?clientId=ff")
    await ws.receive_json(timeout=5)
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    reply = await ws.receive_json(timeout=5)
    assert reply["type"] == "feature_flags"
    assert reply["data"]["supports_preview_metadata"] is True
    assert reply["data"]["max_upload_size"] == 100 * 1024 * 1024
    assert reply["data"] == await (await client.get("/features")).json()


async def _preview_frames(client, flags: dict | None) -> list[bytes]:
    ws = await client.ws_connect("/ws?clientId=pv")
    await ws.receive_json(timeout=5)
    if flags is not None:
        await ws.send_json({"type": "feature_flags", "data": flags})
        await ws.receive_json(timeout=5)
    prompt = {"1": {"class_type": "TestPreview", "inputs": {"size": 1024}}}
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": "pv"})
    pid = (await resp.json())["prompt_id"]
    messages = await collect_until_done(ws, pid)
    return [m for m in messages if isinstance(m, bytes)]


async def test_preview_frames_type_1_for_plain_clients(client) -> None:
    frames = await _preview_frames(client, None)
    assert len(frames) == 2
    kind, fmt = struct.unpack(">II", frames[0][:8])
    assert (kind, fmt) == (1, 1)  # PREVIEW_IMAGE, JPEG
    image = Image.open(io.BytesIO(frames[0][8:]))
    assert image.format == "JPEG" and max(image.size) == 512  # --preview-size
    kind, fmt = struct.unpack(">II", frames[1][:8])
    assert (kind, fmt) == (1, 2)
    assert Image.open(io.BytesIO(frames[1][8:])).size == (16, 16)  # the node's own max_size


async def test_preview_frames_type_4_with_metadata(client) -> None:
    frames = await _preview_frames(client, {"supports_preview_metadata": True})
    kind, length = struct.unpack(">II", frames[0][:8])
    assert kind == 4
    meta = json.loads(frames[0][8 : 8 + length])
    assert meta["node_id"] == "1" and meta["image_type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frames[0][8 + length :])).format == "JPEG"


async def test_reconnect_hint_while_running(client) -> None:
    prompt = {"1": {"class_type": "NoodleSleep", "inputs": {"seconds": 1.5, "value": 1}}}
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": "back"})
    pid = (await resp.json())["prompt_id"]
    await wait_running(client, pid)
    await asyncio.sleep(0.2)  # the executing event reaches the loop
    ws = await client.ws_connect("/ws?clientId=back")
    first = await ws.receive_json(timeout=5)
    hint = await ws.receive_json(timeout=5)
    assert first["type"] == "status"
    assert hint == {"type": "executing", "data": {"node": "1"}}
    messages = await collect_until_done(ws, pid)
    assert messages[-1]["data"] == {"node": None, "prompt_id": pid}


async def test_interrupt_sends_execution_interrupted(client) -> None:
    ws = await client.ws_connect("/ws?clientId=int")
    await ws.receive_json(timeout=5)
    prompt = {
        "1": {"class_type": "NoodleSleep", "inputs": {"seconds": 0.5, "value": 1}},
        "2": {"class_type": "NoodleSleep", "inputs": {"seconds": 0.5, "value": ["1", 0]}},
    }
    pid = (await (await client.post("/prompt", json={"prompt": prompt, "client_id": "int"})).json())["prompt_id"]
    await wait_running(client, pid)
    assert (await client.post("/interrupt", json={"prompt_id": "someone-else"})).status == 200
    assert (await client.post("/interrupt", json={"prompt_id": pid})).status == 200
    messages = await collect_until_done(ws, pid)
    kinds = [m["type"] for m in messages]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds
    entry = await wait_history(client, pid)
    assert entry["status"]["status_str"] == "error"
    jobs = await (await client.get("/api/jobs?status=cancelled")).json()
    assert [j["id"] for j in jobs["jobs"]] == [pid]


async def test_closed_socket_is_forgotten(client) -> None:
    ws = await client.ws_connect("/ws?clientId=gone")
    await ws.receive_json(timeout=5)
    await ws.close()
    assert ws.closed
    await asyncio.sleep(0.05)
    resp = await client.post("/prompt", json={"prompt": simple_prompt(), "client_id": "gone"})
    pid = (await resp.json())["prompt_id"]
    entry = await wait_history(client, pid)  # events to a missing socket are dropped quietly
    assert entry["status"]["completed"] is True
