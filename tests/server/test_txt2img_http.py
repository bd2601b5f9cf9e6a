"""txt2img over the real HTTP and websocket API, on the default checkpoint (the demo model).

The shipped ``workflows/txt2img.json`` at 64x64 and two steps, posted as the editor posts
it (with ``client_id`` and the workflow in ``extra_pnginfo``): the websocket carries
PROTOCOL 3.3's whole sequence, history is written before ``executing`` null, and ``/view``
serves the PNG with the executed prompt and the workflow in its text chunks.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

from PIL import Image
from server_kit import collect_until_done

from nodes.default_model import DEFAULT_CHECKPOINT, ensure_default_checkpoint
from nodes.folders import Folders

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = json.loads((ROOT / "workflows" / "txt2img.ui.json").read_text())


def small_txt2img(seed: int = 7) -> dict[str, Any]:
    """workflows/txt2img.json at 64x64, two steps."""
    prompt = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(steps=2, seed=seed)
    return prompt


def node_sections(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split the per-node part of the stream (between execution_cached and execution_success) by node.

    Asserts PROTOCOL 3.3's grammar for each executed node: progress_state running (0/1),
    executing, then (progress + progress_state running)* per step, then executed if the
    node has a ui output, then progress_state finished.
    """
    sections: list[dict[str, Any]] = []
    i = 0
    while messages[i]["type"] != "execution_success":
        start = messages[i]
        node = next(iter(start["data"]["nodes"]))
        assert start["type"] == "progress_state" and start["data"]["nodes"][node]["state"] == "running"
        assert (start["data"]["nodes"][node]["value"], start["data"]["nodes"][node]["max"]) == (0, 1)
        assert messages[i + 1]["type"] == "executing" and messages[i + 1]["data"]["node"] == node
        i += 2
        section: dict[str, Any] = {"node": node, "steps": [], "output": None}
        while messages[i]["type"] == "progress":
            step = messages[i]["data"]
            state = messages[i + 1]
            assert state["type"] == "progress_state"
            assert state["data"]["nodes"][node]["value"] == step["value"]
            section["steps"].append((step["value"], step["max"]))
            i += 2
        if messages[i]["type"] == "executed":
            assert messages[i]["data"]["node"] == node
            section["output"] = messages[i]["data"]["output"]
            i += 1
        end = messages[i]
        assert end["type"] == "progress_state" and end["data"]["nodes"][node]["state"] == "finished", end
        i += 1
        sections.append(section)
    return sections


async def post(client: Any, prompt: dict[str, Any], client_id: str) -> str:
    resp = await client.post("/prompt", json={"prompt": prompt, "client_id": client_id,
                                              "extra_data": {"extra_pnginfo": {"workflow": WORKFLOW}}})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["node_errors"] == {}
    return body["prompt_id"]


async def test_txt2img_event_sequence_history_and_view(make_client, tmp_path: Path) -> None:
    assert ensure_default_checkpoint(Folders(tmp_path)) == DEFAULT_CHECKPOINT
    client = await make_client()
    ws = await client.ws_connect("/ws?clientId=painter")
    await ws.receive_json(timeout=5)
    pid = await post(client, small_txt2img(), "painter")
    received = await collect_until_done(ws, pid, timeout=180)
    # history exists by the time executing null arrives
    history = (await (await client.get(f"/history/{pid}")).json())[pid]

    frames = [m for m in received if isinstance(m, bytes)]
    messages = [m for m in received if not isinstance(m, bytes)]
    assert [m["type"] for m in messages[:4]] == ["status", "status", "execution_start", "execution_cached"]
    assert messages[0]["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert messages[3]["data"]["nodes"] == []
    assert [m["type"] for m in messages[-3:]] == ["execution_success", "status", "executing"]
    assert messages[-1]["data"] == {"node": None, "prompt_id": pid}
    assert messages[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0

    sections = node_sections(messages[4:])
    assert sorted(s["node"] for s in sections) == ["3", "4", "5", "6", "7", "8", "9"]
    by_node = {s["node"]: s for s in sections}
    order = [s["node"] for s in sections]
    assert order.index("4") < order.index("6") < order.index("3") < order.index("8") < order.index("9")
    assert by_node["3"]["steps"] == [(1, 2), (2, 2)]
    assert [n for n, s in by_node.items() if s["output"] is not None] == ["9"]
    image = {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}
    assert by_node["9"]["output"] == {"images": [image]}
    # live previews while sampling: plain clients get type-1 frames (JPEG)
    assert len(frames) == 2 and all(struct.unpack(">II", f[:8]) == (1, 1) for f in frames)

    assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
    assert history["outputs"]["9"] == {"images": [image]}

    resp = await client.get("/view", params={"filename": image["filename"], "type": "output", "subfolder": ""})
    assert resp.status == 200 and resp.content_type == "image/png"
    with Image.open(io.BytesIO(await resp.read())) as png:
        assert png.size == (64, 64)
        chunks = dict(png.text)
    executed = json.loads(chunks["prompt"])
    assert executed["3"]["inputs"]["cfg"] == 5.0 and executed["5"]["inputs"]["width"] == 64
    assert json.loads(chunks["workflow"]) == WORKFLOW


async def test_a_new_seed_reruns_only_the_sampler_and_what_follows(make_client, tmp_path: Path) -> None:
    ensure_default_checkpoint(Folders(tmp_path))
    client = await make_client()
    ws = await client.ws_connect("/ws?clientId=seeds")
    await ws.receive_json(timeout=5)
    await collect_until_done(ws, await post(client, small_txt2img(seed=1), "seeds"), timeout=180)
    pid = await post(client, small_txt2img(seed=2), "seeds")
    messages = [m for m in await collect_until_done(ws, pid, timeout=180) if not isinstance(m, bytes)]
    cached = next(m for m in messages if m["type"] == "execution_cached")
    assert sorted(cached["data"]["nodes"]) == ["4", "5", "6", "7"]
    ran = [m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"]["node"] is not None]
    assert ran == ["3", "8", "9"]
    history = (await (await client.get(f"/history/{pid}")).json())[pid]
    assert history["outputs"]["9"]["images"][0]["filename"] == "ComfyUI_00002_.png"


def test_serve_writes_the_default_checkpoint_into_an_empty_folder(make_config, tmp_path: Path) -> None:
    """``noodlebox serve`` (without ``--no-default-model``) gives a fresh base folder the embedded default."""
    from server.app import create_app
    from server.commands.serve import ensure_default_model

    app = create_app(make_config())
    ensure_default_model(app)
    assert (tmp_path / "models" / "checkpoints" / DEFAULT_CHECKPOINT).is_file()


def test_serve_flag_turns_the_default_off() -> None:
    import argparse

    from server.commands import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    assert parser.parse_args(["serve"]).no_default_model is False
    assert parser.parse_args(["serve", "--no-default-model"]).no_default_model is True
