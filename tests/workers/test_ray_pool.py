"""The Ray pool with real Ray: same events and files as the local worker, twice the throughput
with two actors, crashes survived, interrupt and /free sent to the actors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from workers_kit import collect_until_done, post, sleep_prompt, wait_history

_TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")


def image_prompt(prefix: str, color: int) -> dict[str, Any]:
    """EmptyImage saved (output), previewed (temp), plus a text output and a short sleep."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 2, "color": color}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "4": {"class_type": "PrimitiveString", "inputs": {"value": "hi"}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
        "6": {"class_type": "WorkerSleep", "inputs": {"seconds": 0.1, "value": color}},
    }


def normalize(value: Any) -> Any:
    """``value`` without timestamps, and PreviewImage's random temp prefix made constant."""
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items() if k != "timestamp"}
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return _TEMP_NAME.sub("ComfyUI_temp_XXXXX_", value)
    return value


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by normalized relative path."""
    return {normalize(p.relative_to(folder).as_posix()): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


async def run_three(client: Any) -> tuple[list[Any], dict[str, Any]]:
    """Run a prompt, the same again (all cached), and a variant; the messages and the outputs."""
    ws = await client.ws_connect("/ws?clientId=c1")
    await ws.receive_json(timeout=10)
    prompts = [image_prompt("same/img", 0xFF0000), image_prompt("same/img", 0xFF0000),
               image_prompt("same/img", 0x00FF00)]
    messages = []
    for i, prompt in enumerate(prompts):
        pid = await post(client, prompt, client_id="c1", prompt_id=f"p{i}")
        messages.append(await collect_until_done(ws, pid))
    history = await wait_history(client, ["p0", "p1", "p2"])
    await ws.close()
    return messages, {pid: (entry["outputs"], entry["status"]) for pid, entry in history.items()}


async def test_pool_gives_the_local_workers_events_and_files(make_client, pool, pool_base: Path,
                                                             tmp_path: Path) -> None:
    local_base = tmp_path / "local"
    local_messages, local_history = await run_three(await make_client(local_base))
    ray_messages, ray_history = await run_three(await make_client(pool_base, pool))

    assert normalize(ray_messages) == normalize(local_messages)
    assert normalize(ray_history) == normalize(local_history)
    # the second run is all cached, the third saves the next counter: same names, same bytes
    assert [i["filename"] for i in ray_history["p2"][0]["2"]["images"]] == ["img_00003_.png", "img_00004_.png"]
    local_files = files_under(local_base / "output" / "same")
    assert files_under(pool_base / "output" / "same") == local_files
    assert len(local_files) == 4
    for entry in ray_history.values():  # every previewed temp file the ui names is on the server
        for image in entry[0]["3"]["images"]:
            assert (pool_base / "temp" / image["subfolder"] / image["filename"]).is_file()


async def _all_ready(pool: Any, timeout: float = 60.0) -> None:
    """Wait until every actor is alive (a replacement from an earlier test may be starting)."""
    deadline = time.monotonic() + timeout
    while not all(w["alive"] and not w["running"] for w in pool.status()["workers"]):
        assert time.monotonic() < deadline, pool.status()
        await asyncio.sleep(0.1)


async def _wait_running_on(client: Any, prompt_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = await (await client.get("/queue")).json()
        if prompt_id in queue.get("running_on", {}):
            return str(queue["running_on"][prompt_id])
        await asyncio.sleep(0.05)
    raise AssertionError(f"{prompt_id} never started")


async def test_two_actors_run_eight_sleeps_in_half_the_time(make_client, pool, pool_base: Path) -> None:
    await _all_ready(pool)
    client = await make_client(pool_base, pool)
    started = time.monotonic()
    ids = [await post(client, sleep_prompt(2.0, 1000 + i)) for i in range(8)]
    await asyncio.sleep(0.5)
    queue = await (await client.get("/queue")).json()
    assert len(queue["queue_running"]) == 2  # both actors busy
    assert sorted(queue["running_on"].values()) == ["ray-0", "ray-1"]
    jobs = (await (await client.get("/api/jobs?status=in_progress")).json())["jobs"]
    assert sorted(j["worker"] for j in jobs) == ["ray-0", "ray-1"]
    stats = await (await client.get("/system_stats")).json()
    assert sorted(w["name"] for w in stats["workers"] if w["running"]) == ["ray-0", "ray-1"]
    history = await wait_history(client, ids, timeout=60)
    elapsed = time.monotonic() - started
    assert all(entry["status"]["status_str"] == "success" for entry in history.values())
    # one actor needs at least 8 x 2 s = 16 s (its prompts cannot overlap); two take about half
    assert 8.0 <= elapsed < 0.65 * 16.0, f"8 prompts of 2 s on 2 actors took {elapsed:.1f} s"


async def test_interrupt_reaches_the_actor_running_that_prompt(make_client, pool, pool_base: Path) -> None:
    await _all_ready(pool)
    client = await make_client(pool_base, pool)
    keep = await post(client, sleep_prompt(0.8, 4000, chain=3))
    stop = await post(client, sleep_prompt(0.8, 4001, chain=3))
    await _wait_running_on(client, keep)
    await _wait_running_on(client, stop)
    resp = await client.post("/interrupt", json={"prompt_id": stop})
    assert resp.status == 200
    history = await wait_history(client, [keep, stop], timeout=60)
    assert history[keep]["status"]["status_str"] == "success"
    assert len(history[keep]["outputs"]) == 3
    assert "execution_interrupted" in dict(history[stop]["status"]["messages"])
    assert len(history[stop]["outputs"]) < 3


async def test_free_memory_clears_every_actors_cache(make_client, pool, pool_base: Path) -> None:
    await _all_ready(pool)
    client = await make_client(pool_base, pool)
    prompt = sleep_prompt(0.5, 5000)
    # the same prompt twice at once: each actor runs (and caches) it
    first = [await post(client, prompt), await post(client, prompt)]
    await wait_history(client, first)
    cached = await post(client, prompt)
    entry = (await wait_history(client, [cached]))[cached]
    assert dict(entry["status"]["messages"])["execution_cached"]["nodes"] == ["1"]
    assert (await client.post("/free", json={"free_memory": True})).status == 200
    await asyncio.sleep(0.5)  # each actor frees between prompts
    again = await post(client, prompt)
    entry = (await wait_history(client, [again]))[again]
    assert dict(entry["status"]["messages"])["execution_cached"]["nodes"] == []


def _txt2img(seed: int) -> dict[str, Any]:
    """workflows/txt2img.json on the tiny default checkpoint, 64 px and 4 steps."""
    prompt = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json").read_text())
    for node in prompt.values():
        node.pop("_meta", None)
        if node["class_type"] == "KSampler":
            node["inputs"].update(seed=seed, steps=4)
        elif node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
    return prompt


async def _run_txt2img(client: Any) -> tuple[list[Any], dict[str, Any]]:
    ws = await client.ws_connect("/ws?clientId=t1")
    await ws.receive_json(timeout=10)
    pid = await post(client, _txt2img(42), client_id="t1", prompt_id="t2i")
    messages = await collect_until_done(ws, pid, timeout=180)
    await ws.close()
    return messages, (await wait_history(client, [pid]))[pid]


async def test_txt2img_on_the_tiny_model_gives_the_same_events_and_pixels(make_client, pool, pool_base: Path,
                                                                          tmp_path: Path) -> None:
    pytest.importorskip("nodes.sampling")
    from nodes.default_model import ensure_default_checkpoint
    from nodes.folders import Folders

    await _all_ready(pool)
    local_base = tmp_path / "local"
    for base in (local_base, pool_base):
        ensure_default_checkpoint(Folders(base))
    local_messages, local_entry = await _run_txt2img(await make_client(local_base))
    ray_messages, ray_entry = await _run_txt2img(await make_client(pool_base, pool))

    assert normalize(ray_messages) == normalize(local_messages)  # previews (binary frames) included
    assert sum(isinstance(m, bytes) for m in ray_messages) == 4  # one preview per step
    for key in ("outputs", "status", "meta"):  # the "prompt" part differs only in create_time
        assert normalize(ray_entry[key]) == normalize(local_entry[key])
    (image,) = ray_entry["outputs"]["9"]["images"]
    saved = pool_base / "output" / image["subfolder"] / image["filename"]
    assert saved.read_bytes() == (local_base / "output" / image["subfolder"] / image["filename"]).read_bytes()


async def test_killed_actor_prompt_is_retried_and_others_finish(make_client, pool, pool_base: Path) -> None:
    await _all_ready(pool)
    client = await make_client(pool_base, pool)
    # the first prompt sleeps long enough to be killed mid-way even on a busy machine
    ids = [await post(client, sleep_prompt(3.0 if i == 0 else 1.5, 2000 + i)) for i in range(4)]
    victim = ids[0]
    name = await _wait_running_on(client, victim)
    await asyncio.sleep(0.5)  # mid-prompt
    restarts = {w["name"]: w["restarts"] for w in pool.status()["workers"]}
    os.kill(pool.actor_pid(name), signal.SIGKILL)
    history = await wait_history(client, ids, timeout=90)
    assert {pid: e["status"]["status_str"] for pid, e in history.items()} == dict.fromkeys(ids, "success")
    assert history[victim]["outputs"]["1"]["text"] == ["200001"]
    after = {w["name"]: w for w in pool.status()["workers"]}
    assert after[name]["restarts"] == restarts[name] + 1


async def test_prompt_that_kills_two_actors_fails_clearly_and_the_pool_goes_on(make_client, pool,
                                                                              pool_base: Path) -> None:
    await _all_ready(pool)
    client = await make_client(pool_base, pool)
    crash = await post(client, {"1": {"class_type": "WorkerCrash", "inputs": {"value": 1}}})
    after = await post(client, sleep_prompt(0.2, 3000))
    history = await wait_history(client, [crash, after], timeout=120)
    assert history[after]["status"]["status_str"] == "success"
    status = history[crash]["status"]
    assert status["status_str"] == "error"
    error = dict(status["messages"])["execution_error"]
    assert error["exception_type"] == "WorkerLostError"
    assert "died" in error["exception_message"] and "retry" in error["exception_message"]
