"""The pool's Ray-free parts: placement with cache affinity, shipped files and their names,
previews across processes, input files, status rows."""

from __future__ import annotations

import pickle
from pathlib import Path

from PIL import Image

from server.queue import Dispatcher
from server.workers.pool import (
    OutputWriter,
    Placement,
    affinity_keys,
    collect_new_files,
    input_files,
    rewrite_ui,
    running_on,
    worker_rows,
)
from server.workers.ray_actor import pack_preview, unpack_preview


def _ckpt_prompt(ckpt: str, seed: int) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "seed": seed}},
    }


def test_placement_prefers_the_worker_that_loaded_the_same_model() -> None:
    placement = Placement()
    for name in ("a", "b", "c"):
        placement.add(name)
    first = placement.acquire("p1", affinity_keys(_ckpt_prompt("sd15.safetensors", 1)), timeout=1)
    placement.release(first, "p1", affinity_keys(_ckpt_prompt("sd15.safetensors", 1)))
    other = placement.acquire("p2", affinity_keys(_ckpt_prompt("sdxl.safetensors", 1)), timeout=1)
    assert other != first  # nothing in common: the longest-idle worker, not the one just used
    placement.release(other, "p2", affinity_keys(_ckpt_prompt("sdxl.safetensors", 1)))
    # a new seed shares only the checkpoint loader: still the worker holding that checkpoint
    assert placement.acquire("p3", affinity_keys(_ckpt_prompt("sd15.safetensors", 99)), timeout=1) == first
    assert placement.acquire("p4", affinity_keys(_ckpt_prompt("sdxl.safetensors", 5)), timeout=1) == other
    assert placement.running == {"p3": first, "p4": other}
    # busy workers are never handed out twice; the last one is
    last = placement.acquire("p5", set(), timeout=1)
    assert last not in (first, other)
    assert placement.acquire("p6", set(), timeout=0.05) is None
    placement.forget_loaded()
    assert placement.loaded(first) == []


def test_a_dead_worker_is_not_placed_until_it_is_added_again() -> None:
    placement = Placement()
    placement.add("a")
    assert placement.acquire("p1", set(), timeout=1) == "a"
    placement.remove("a")
    placement.release("a", "p1")  # the failed run's release must not revive it
    assert placement.acquire("p2", set(), timeout=0.05) is None
    placement.add("a")
    assert placement.acquire("p2", set(), timeout=1) == "a"


def test_shipped_files_keep_their_name_or_take_the_next_counter(tmp_path: Path) -> None:
    worker_out = tmp_path / "worker" / "output"
    (worker_out / "sub").mkdir(parents=True)
    server_out = tmp_path / "server" / "output"
    (server_out / "sub").mkdir(parents=True)
    (server_out / "sub" / "img_00001_.png").write_bytes(b"older")
    (server_out / "sub" / "img_00007_.png").write_bytes(b"older")
    (worker_out / "sub" / "img_00001_.png").write_bytes(b"one")
    (worker_out / "note.txt").write_bytes(b"text")
    shipped: set[tuple[str, str]] = set()
    files = collect_new_files({"output": worker_out}, shipped)
    assert files == {("output", "sub/img_00001_.png"): b"one", ("output", "note.txt"): b"text"}
    # shipped files are kept as empty names: the worker's counter goes on, nothing is sent twice
    assert (worker_out / "sub" / "img_00001_.png").read_bytes() == b""
    assert collect_new_files({"output": worker_out}, shipped) == {}

    writer = OutputWriter({"output": server_out})
    writer.write("w1", files)
    assert (server_out / "sub" / "img_00008_.png").read_bytes() == b"one"
    assert (server_out / "note.txt").read_bytes() == b"text"
    ui = {"images": [{"filename": "img_00001_.png", "subfolder": "sub", "type": "output"},
                     {"filename": "img_00001_.png", "subfolder": "sub", "type": "temp"}]}
    assert writer.rewrite("w1", ui)["images"] == [
        {"filename": "img_00008_.png", "subfolder": "sub", "type": "output"},
        {"filename": "img_00001_.png", "subfolder": "sub", "type": "temp"},  # another kind: untouched
    ]
    assert writer.rewrite("w2", ui) == ui  # another worker's names are its own
    writer.write("w1", {("output", "note.txt"): b"again"})
    assert (server_out / "note_1.txt").read_bytes() == b"again"
    writer.write("w1", {("output", "../escape.png"): b"x"})
    assert not (tmp_path / "server" / "escape.png").exists()
    writer.forget("w1")
    assert writer.rewrite("w1", ui) == ui


def test_rewrite_ui_walks_nested_values() -> None:
    renames = {("output", "", "a.png"): "b.png"}
    value = ["executed", {"output": {"images": ({"filename": "a.png", "subfolder": "", "type": "output"},)}}]
    assert rewrite_ui(value, renames) == ["executed", {"output": {"images": (
        {"filename": "b.png", "subfolder": "", "type": "output"},)}}]


def test_a_preview_crosses_processes_and_encodes_to_the_same_frame() -> None:
    image = Image.new("RGB", (300, 120), (10, 200, 30))
    image.putpixel((5, 5), (255, 0, 0))
    data = {"prompt_id": "p", "node_id": "3", "display_node_id": "3", "preview": ("JPEG", image, 64)}
    travelled = unpack_preview(pickle.loads(pickle.dumps(pack_preview(data))))
    dispatcher = Dispatcher(None, object(), None)  # type: ignore[arg-type]
    direct, remote = dispatcher._encode_preview(data), dispatcher._encode_preview(travelled)
    assert direct is not None and remote is not None
    assert remote.data == direct.data and remote.metadata == direct.metadata
    assert pack_preview({"preview": "not a tuple"}) == {}


def test_input_files_are_those_the_prompt_names(tmp_path: Path) -> None:
    (tmp_path / "input" / "sub").mkdir(parents=True)
    (tmp_path / "input" / "sub" / "cat.png").write_bytes(b"cat")
    (tmp_path / "secret.txt").write_text("no")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "sub/cat.png [input]"}},
        "2": {"class_type": "X", "inputs": {"a": "../secret.txt", "b": ["1", 0], "c": "missing.png", "d": 3}},
    }
    assert input_files(prompt, tmp_path / "input") == {"sub/cat.png": b"cat"}
    assert input_files(prompt, tmp_path / "input", limit_bytes=1) == {}


def test_worker_rows_of_local_and_pool_status() -> None:
    assert worker_rows({"kind": "local", "running": "p1", "prompts_run": 3}) == [
        {"kind": "local", "running": "p1", "prompts_run": 3, "name": "local"}]
    pool = {"kind": "ray", "workers": [{"name": "ray-0", "running": None}, {"name": "ray-1", "running": "p2"}]}
    assert running_on(pool) == {"p2": "ray-1"}


def test_affinity_keys_follow_links_and_survive_long_chains_and_cycles() -> None:
    chain = {str(i): {"class_type": "Step", "inputs": {"x": [str(i - 1), 0]} if i else {"v": 1}} for i in range(5000)}
    assert len(affinity_keys(chain)) == 5000
    cycle = {"1": {"class_type": "A", "inputs": {"x": ["2", 0]}}, "2": {"class_type": "A", "inputs": {"x": ["1", 0]}}}
    assert len(affinity_keys(cycle)) == 2
    same_tail = {k: dict(v) for k, v in chain.items()}
    same_tail["0"] = {"class_type": "Step", "inputs": {"v": 2}}  # the source changed: every key changes
    assert not (affinity_keys(same_tail) & affinity_keys(chain))


def test_closing_placement_wakes_a_waiting_acquire() -> None:
    import threading

    placement = Placement()
    got: list[str | None] = ["unset"]
    waiter = threading.Thread(target=lambda: got.__setitem__(0, placement.acquire("p", set())))
    waiter.start()
    placement.close()
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got == [None]


def test_runtime_streams_events_and_takes_the_next_prompt_right_after_done(tmp_path: Path) -> None:
    from workers_kit import WORKER_NODES

    from server.workers.ray_actor import DONE, WorkerRuntime

    runtime = WorkerRuntime("w", {"custom_nodes_dirs": [str(WORKER_NODES)], "models_dir": str(tmp_path)})
    for value in (1, 2, 3):  # back to back: each start comes the moment the last result is read
        prompt = {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": value}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "rt"}},
        }
        assert runtime.start({"prompt": prompt, "prompt_id": f"p{value}", "outputs": ["2"], "extra_data": {}})
        events: list[tuple[str, object, dict]] = []
        while not events or events[-1][0] != DONE:
            events.extend(runtime.poll(5.0))
        executed = next(e for e in events if e[0] == "executed")
        assert list(executed[2]) == [("output", f"rt_0000{value}_.png")]  # the file travels with its event
        assert events[-1][1]["status"] == "success"
    assert runtime.status() == {"running": None, "prompts_run": 3}
    runtime.cleanup()
    assert not runtime.root.exists()
