"""Helpers shared by the Ray worker tests (a unique module name, so test files can import it)."""


from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from server.config import ServerConfig
from tests import ws_kit

WORKER_NODES = Path(__file__).resolve().parents[1] / "data" / "worker_nodes"


class Borrowed:
    """A pool lent to one app: everything is the pool's, except ``close`` (the fixture closes it)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def close(self) -> None:
        """Leave the pool running for the next test."""


def make_pool(base: Path, size: int, **kwargs: Any) -> Any:
    """A :class:`RayPool` of ``size`` actors serving the folders under ``base``."""
    from server.workers.ray_worker import pool_from_config

    config = ServerConfig(base_dir=base, custom_nodes_dirs=(WORKER_NODES,))
    config.ensure_dirs()
    return pool_from_config(config, size, None, **kwargs)


ClientFactory = Callable[..., Awaitable[TestClient]]


async def post(client: TestClient, prompt: dict[str, Any], **extra: Any) -> str:
    """Queue ``prompt``; return its id."""
    resp = await client.post("/prompt", json={"prompt": prompt, **extra})
    body = await resp.json()
    assert resp.status == 200, body
    return str(body["prompt_id"])


async def collect_until_done(ws: Any, prompt_id: str, timeout: float = 60.0) -> list[Any]:
    """Websocket messages (JSON dicts, bytes for binary frames) until ``executing`` node null."""
    return await ws_kit.collect_until_done(ws, prompt_id, timeout)


async def wait_history(client: TestClient, prompt_ids: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``/history`` until every id has an entry; return those entries."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        history = await (await client.get("/history")).json()
        if all(pid in history for pid in prompt_ids):
            return {pid: history[pid] for pid in prompt_ids}
        if asyncio.get_running_loop().time() > deadline:
            missing = [pid for pid in prompt_ids if pid not in history]
            raise AssertionError(f"no history for {missing}")
        await asyncio.sleep(0.05)


def sleep_prompt(seconds: float, value: int, chain: int = 1) -> dict[str, Any]:
    """``chain`` WorkerSleep nodes in a row, each sleeping ``seconds``."""
    prompt: dict[str, Any] = {}
    for i in range(1, chain + 1):
        inputs: dict[str, Any] = {"seconds": seconds, "value": value * 100 + i}
        if i > 1:
            inputs["after"] = [str(i - 1), 0]
        prompt[str(i)] = {"class_type": "WorkerSleep", "inputs": inputs}
    return prompt
