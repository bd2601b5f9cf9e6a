"""Helpers shared by the server tests (kept out of conftest.py so that test modules can
import them by a name no other test folder uses)."""


from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from graph.schema import InputSpec, NodeBehaviour, NodeSchema
from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry
from tests import ws_kit

DATA = Path(__file__).resolve().parents[1] / "data"
CUSTOM_NODES = DATA / "server_nodes"


def _preview_execute(instance: Any, ctx: Any, inputs: dict[str, Any]) -> Any:
    from PIL import Image

    size = int(inputs.get("size", 64))
    image = Image.new("RGB", (size, size), (200, 30, 30))
    ctx.progress(1, 2, ("JPEG", image, None))
    ctx.progress(2, 2, ("PNG", image, 16))
    return {"ui": {"text": ["previewed"]}, "result": ()}


PREVIEW_NODE = NodeSchema(
    name="TestPreview",
    inputs=(InputSpec("size", "INT", options={"default": 64, "min": 1, "max": 4096}),),
    outputs=(),
    behaviour=NodeBehaviour(execute=_preview_execute),
    output_node=True,
    category="testing",
)


def _even(inputs: dict[str, Any]) -> Any:
    return True if int(inputs["n"]) % 2 == 0 else "n must be even"


VALIDATED_NODE = NodeSchema(
    name="TestEven",
    inputs=(InputSpec("n", "INT", options={"default": 0}),),
    outputs=(),
    behaviour=NodeBehaviour(execute=lambda instance, ctx, inputs: {"ui": {"text": [str(inputs["n"])]}},
                            validate=_even, validate_params=frozenset({"n"})),
    output_node=True,
    category="testing",
)


def make_registry(base: Path) -> Any:
    """The real registry (pure nodes + test pack) plus ``TestPreview`` and ``TestEven``."""
    registry = build_registry(Services(folders=Folders(base)), custom_nodes_dirs=[CUSTOM_NODES])
    registry.add(PREVIEW_NODE)
    registry.add(VALIDATED_NODE)
    return registry


def chain_prompt(n: int, output: bool = True, seed: str = "x") -> dict[str, Any]:
    """A prompt of ``n`` StringConcatenate nodes in a chain (from ``seed``), ending in PreviewAny."""
    prompt: dict[str, Any] = {"1": {"class_type": "PrimitiveString", "inputs": {"value": seed}}}
    for i in range(2, n + 1):
        prompt[str(i)] = {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": [str(i - 1), 0], "string_b": "", "delimiter": ""},
        }
    if output:
        prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [str(n), 0]}}
    return prompt


def simple_prompt(value: str = "hello") -> dict[str, Any]:
    """Two nodes: a string constant shown by PreviewAny."""
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": value}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


async def collect_until_done(ws: Any, prompt_id: str, timeout: float = 20.0) -> list[Any]:
    """Messages of a websocket (JSON dicts, or bytes for binary frames) until ``executing`` node null."""
    return await ws_kit.collect_until_done(ws, prompt_id, timeout)


async def wait_history(client: TestClient, prompt_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll ``/history/{id}`` until the entry exists; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/history/{prompt_id}")
        body = await resp.json()
        if prompt_id in body:
            return body[prompt_id]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no history for {prompt_id}")
        await asyncio.sleep(0.02)


class ServeProcess:
    """``noodlebox serve`` in a subprocess on a free loopback port (``--port 0``)."""

    def __init__(self, base_dir: Path, *extra: str) -> None:
        import subprocess
        import sys

        root = Path(__file__).resolve().parents[2]
        # `python -m server.commands.serve` is `noodlebox serve` without the other subcommands' imports
        args = [sys.executable, "-m", "server.commands.serve", "--port", "0", "--base-dir", str(base_dir),
                "--custom-nodes", str(CUSTOM_NODES), *extra]
        self.log = base_dir / "serve.log"
        with open(self.log, "a") as log:  # a file, not a pipe: a chatty server never blocks on it
            self.proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "noodlebox: serving on http://127.0.0.1:PORT"
        if "serving on" not in line:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line!r} {self.log.read_text()}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.proc.terminate()
        return self.proc.wait(timeout=30)


async def wait_running(client: TestClient, prompt_id: str, timeout: float = 20.0) -> None:
    """Poll ``/api/jobs/{id}`` until the prompt is the running one."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await (await client.get(f"/api/jobs/{prompt_id}")).json()
        if job.get("status") == "in_progress":
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{prompt_id} never ran: {job}")
        await asyncio.sleep(0.02)
