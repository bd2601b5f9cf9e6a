"""SaveImageWebsocket over a real socket, read the way ComfyUI's ``websockets_api_example_ws_images.py`` reads it.

That client connects with a clientId, queues a prompt whose SaveImageWebsocket node has
the id ``save_image_websocket_node``, follows ``executing`` messages to know which node
is running, and keeps ``frame[8:]`` of every binary frame that arrives while that node
runs, until ``executing`` with ``node: null``.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

from aiohttp import WSMsgType
from PIL import Image

NODE = "save_image_websocket_node"


def _prompt(width: int, height: int, batch: int, color: int) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                      "color": color}},
        NODE: {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }


async def _images_like_the_example(ws, prompt_id: str) -> list[bytes]:
    """The example client's loop: binary frames seen while the websocket node runs, without the 8-byte header."""
    current_node = ""
    images: list[bytes] = []
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            message = json.loads(msg.data)
            if message["type"] == "executing" and message["data"].get("prompt_id") == prompt_id:
                if message["data"]["node"] is None:
                    break
                current_node = message["data"]["node"]
        elif msg.type == WSMsgType.BINARY:
            if current_node == NODE:
                assert struct.unpack(">II", msg.data[:8]) == (1, 2)  # PREVIEW_IMAGE, PNG
                images.append(msg.data[8:])
        else:
            break
    return images


async def test_images_arrive_as_png_frames_and_no_file_is_written(client, tmp_path: Path) -> None:
    ws = await client.ws_connect("/ws?clientId=example")
    await ws.receive_json(timeout=5)
    # Wider than the server's preview size (512): these are the images themselves, never shrunk.
    resp = await client.post("/prompt", json={"prompt": _prompt(600, 40, 2, 0xFF8000), "client_id": "example"})
    assert resp.status == 200, await resp.text()
    prompt_id = (await resp.json())["prompt_id"]
    images = await _images_like_the_example(ws, prompt_id)
    assert len(images) == 2
    for data in images:
        picture = Image.open(io.BytesIO(data))
        assert picture.format == "PNG" and picture.size == (600, 40)
        assert picture.convert("RGB").getpixel((300, 20)) == (255, 128, 0)
    assert not [p for p in tmp_path.rglob("*.png")]
    history = await (await client.get(f"/history/{prompt_id}")).json()
    assert history[prompt_id]["status"]["status_str"] == "success"


async def test_it_runs_again_on_an_identical_prompt(client) -> None:
    ws = await client.ws_connect("/ws?clientId=twice")
    await ws.receive_json(timeout=5)
    counts = []
    for _ in range(2):
        resp = await client.post("/prompt", json={"prompt": _prompt(8, 8, 1, 0), "client_id": "twice"})
        counts.append(len(await _images_like_the_example(ws, (await resp.json())["prompt_id"])))
    assert counts == [1, 1]  # not served from the cache: the images are sent every time


async def test_clients_with_preview_metadata_get_type_4_frames(client) -> None:
    ws = await client.ws_connect("/ws?clientId=fe")
    await ws.receive_json(timeout=5)
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    resp = await client.post("/prompt", json={"prompt": _prompt(16, 8, 1, 0x00FF00), "client_id": "fe"})
    prompt_id = (await resp.json())["prompt_id"]
    frames = []
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            frames.append(msg.data)
        elif msg.type == WSMsgType.TEXT:
            data = json.loads(msg.data)
            if data["type"] == "executing" and data["data"].get("node") is None:
                break
    (frame,) = frames
    kind, length = struct.unpack(">II", frame[:8])
    metadata = json.loads(frame[8:8 + length])
    assert kind == 4 and metadata["node_id"] == NODE and metadata["prompt_id"] == prompt_id
    assert metadata["image_type"] == "image/png"
    assert Image.open(io.BytesIO(frame[8 + length:])).size == (16, 8)
