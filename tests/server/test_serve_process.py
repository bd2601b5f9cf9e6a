"""``noodlebox serve`` as a real process: crash recovery, and a client written like ComfyUI's docs."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image
from server_kit import ServeProcess, simple_prompt


async def _history(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/history") as resp:
        return await resp.json()


async def test_sigkill_while_running_loses_nothing(tmp_path: Path) -> None:
    """20 prompts queued behind a running one; SIGKILL; restart: all 21 finish."""
    server = ServeProcess(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            running = {"1": {"class_type": "NoodleSleep", "inputs": {"seconds": 3.0, "value": -1}}}
            async with session.post(f"{server.url}/prompt", json={"prompt": running, "prompt_id": "running"}) as r:
                assert r.status == 200
            for i in range(20):
                quick = {"1": {"class_type": "NoodleSleep", "inputs": {"seconds": 0, "value": i}}}
                async with session.post(f"{server.url}/prompt", json={"prompt": quick, "prompt_id": f"q{i}"}) as r:
                    assert r.status == 200
            async with session.get(f"{server.url}/queue") as r:
                queue = await r.json()
            assert queue["queue_running"][0][1] == "running"
            assert len(queue["queue_pending"]) == 20
    finally:
        server.kill()

    server = ServeProcess(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            history: dict[str, Any] = {}
            while time.monotonic() < deadline and len(history) < 21:
                await asyncio.sleep(0.2)
                history = await _history(session, server.url)
        assert set(history) == {"running", *(f"q{i}" for i in range(20))}
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        assert history["running"]["outputs"]["1"] == {"text": ["-1"]}
        assert next(iter(history)) == "running"  # the interrupted prompt kept its place at the front
        assert "re-queued after a restart" in server.log.read_text()
    finally:
        assert server.stop() == 0


async def comfy_docs_client(url: str, prompt: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The flow of ComfyUI's ``websockets_api_example.py``: queue with a client_id, read the
    socket until ``executing`` with ``node: null`` for our prompt, then fetch the history and
    every image it lists through ``/view``."""
    client_id = str(uuid.uuid4())
    ws_url = url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    images: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        payload = json.dumps({"prompt": prompt, "client_id": client_id}).encode("utf-8")
        async with session.post(f"{url}/prompt", data=payload) as resp:
            prompt_id = (await resp.json())["prompt_id"]
        while True:
            out = await ws.receive(timeout=30)
            if out.type == aiohttp.WSMsgType.TEXT:
                message = json.loads(out.data)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["node"] is None and data["prompt_id"] == prompt_id:
                        break  # execution is done
            # binary frames are previews: the docs' client skips them
        async with session.get(f"{url}/history/{prompt_id}") as resp:
            history = (await resp.json())[prompt_id]
        for node_output in history["outputs"].values():
            for image in node_output.get("images", []):
                params = {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}
                async with session.get(f"{url}/view", params=params) as resp:
                    images.append(await resp.read())
    return history, images


async def test_comfyui_docs_style_client(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path)
    try:
        history, _ = await comfy_docs_client(server.url, simple_prompt("from a script"))
        assert history["outputs"]["2"] == {"text": ["from a script"]}
        assert history["status"]["completed"] is True
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/object_info") as resp:
            info = await resp.json()
        if {"LoadImage", "SaveImage"} <= set(info):  # the image nodes: once they exist, images too
            (tmp_path / "input").mkdir(exist_ok=True)
            Image.new("RGB", (16, 16), (0, 128, 255)).save(tmp_path / "input" / "src.png")
            prompt = {
                "1": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "docs"}},
            }
            history, images = await comfy_docs_client(server.url, prompt)
            assert len(images) == 1
            assert Image.open(io.BytesIO(images[0])).getpixel((3, 3))[:3] == (0, 128, 255)
    finally:
        assert server.stop() == 0


def test_bad_arguments_are_one_line_exit_2(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    for args in (["--cache", "lru:x"], ["--port", "70000"], ["--custom-nodes", str(tmp_path / "none")]):
        done = subprocess.run([sys.executable, "-m", "server.commands.serve", "--base-dir", str(tmp_path), *args],
                              cwd=root, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr.startswith("noodlebox: error:") and "Traceback" not in done.stderr


async def test_the_server_imports_the_model_runtime_before_the_first_prompt(tmp_path: Path) -> None:
    """``serve`` imports torch and diffusers in the background at start (about 4 s the first
    prompt's loader would otherwise pay); /system_stats then says what ``auto`` picked."""
    server = ServeProcess(tmp_path, "--verbose")
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 90
            choices: dict[str, Any] = {}
            while time.monotonic() < deadline and "picked" not in choices.get("precision", {}):
                await asyncio.sleep(0.5)
                async with session.get(f"{server.url}/system_stats") as r:
                    choices = (await r.json())["noodlebox"]
            assert choices["precision"]["picked"] in ("fp32", "bf16", "fp16"), choices
            assert choices["precision"]["why"].startswith("auto: ")
            async with session.get(f"{server.url}/history") as r:
                assert await r.json() == {}  # no prompt ran: the runtime came from the preload
        assert "model runtime loaded in" in server.log.read_text()
    finally:
        assert server.stop() == 0
