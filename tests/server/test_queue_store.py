"""The durable queue and history: recovery rules, history cap, restarts of an in-process app."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from server_kit import make_registry, simple_prompt, wait_history

from server import store as store_module
from server.app import create_app
from server.config import ServerConfig
from server.queue import PromptQueue
from server.store import Store
from server.workers.base import QueueItem


def item(pid: str, number: float = 0) -> QueueItem:
    """A queue item of a trivial prompt."""
    return QueueItem(number=number, prompt_id=pid, prompt=simple_prompt(), extra_data={}, outputs=["2"])


async def test_running_prompt_is_requeued_once_then_failed(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    store = Store(db)
    queue = PromptQueue(store)
    queue.recover()
    queue.put(item("a"))
    queue.put(item("b"))
    got = await queue.get()
    assert got.prompt_id == "a"
    store.close()  # the process "dies" while a is running

    store = Store(db)
    queue = PromptQueue(store)
    notes = queue.recover()
    assert notes == ["a: re-queued after a restart"]
    assert [i.prompt_id for i in queue.pending()] == ["a", "b"]
    assert (await queue.get()).prompt_id == "a"
    store.close()  # and dies again while a runs

    store = Store(db)
    queue = PromptQueue(store)
    notes = queue.recover()
    assert notes[0].startswith("a: failed")
    entry = store.history_entry("a")
    assert entry is not None and entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][0][1]["exception_type"] == "ServerRestart"
    assert [i.prompt_id for i in queue.pending()] == ["b"]
    assert queue.next_number(False) == 1  # counters resume past stored numbers
    store.close()


async def test_put_back_does_not_count_an_attempt(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    queue = PromptQueue(store)
    queue.put(item("a"))
    for _ in range(3):  # three graceful stops in a row never fail the prompt
        queue.put_back(await queue.get())
    assert store.load_queue()[0][1:] == ("pending", 0)
    store.close()


async def test_history_is_capped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "HISTORY_MAX", 3)
    store = Store(tmp_path / "q.db")
    for i in range(5):
        it = item(f"p{i}", i)
        store.add_pending(it)
        store.finish(it, {"prompt": it.as_tuple(), "outputs": {}, "status": {}, "meta": {}})
    assert list(store.history()) == ["p2", "p3", "p4"]
    assert store.history_count() == 3
    store.close()


async def test_queue_and_history_survive_a_restart(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    config = ServerConfig(base_dir=tmp_path, registry=registry)
    async with TestClient(TestServer(create_app(config))) as client:
        await client.post("/prompt", json={"prompt": simple_prompt("done"), "prompt_id": "first"})
        await wait_history(client, "first")
        await client.post("/queue", json={"pause": True})
        sleepy = {"1": {"class_type": "NoodleSleep", "inputs": {"seconds": 0, "value": 5}}}
        for i in range(3):
            await client.post("/prompt", json={"prompt": sleepy, "prompt_id": f"later{i}"})
    # the app shut down with three prompts pending: a new one runs them and keeps the history
    async with TestClient(TestServer(create_app(config))) as client:
        for i in range(3):
            entry = await wait_history(client, f"later{i}")
            assert entry["outputs"]["1"] == {"text": ["5"]}
        assert "first" in await (await client.get("/history")).json()


async def test_graceful_stop_puts_the_running_prompt_back(tmp_path: Path) -> None:
    config = ServerConfig(base_dir=tmp_path, registry=make_registry(tmp_path))
    slow = {
        "1": {"class_type": "NoodleSleep", "inputs": {"seconds": 0.4, "value": 1}},
        "2": {"class_type": "NoodleSleep", "inputs": {"seconds": 0.4, "value": ["1", 0]}},
    }
    async with TestClient(TestServer(create_app(config))) as client:
        await client.post("/prompt", json={"prompt": slow, "prompt_id": "slow"})
        await asyncio.sleep(0.2)
    async with TestClient(TestServer(create_app(config))) as client:
        entry = await wait_history(client, "slow")
        assert entry["status"]["status_str"] == "success"


async def test_temp_folder_is_emptied_at_start(tmp_path: Path) -> None:
    (tmp_path / "temp" / "sub").mkdir(parents=True)
    (tmp_path / "temp" / "old_preview.png").write_bytes(b"x")
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "keep.png").write_bytes(b"x")
    config = ServerConfig(base_dir=tmp_path, registry=make_registry(tmp_path))
    async with TestClient(TestServer(create_app(config))):
        assert list((tmp_path / "temp").iterdir()) == []
        assert (tmp_path / "output" / "keep.png").exists()
