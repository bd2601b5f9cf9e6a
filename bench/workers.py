"""Throughput of the Ray worker pool for 1, 2 and 4 actors, with scaling efficiency.

Two workloads, each ``--prompts`` prompts fed to a :class:`server.workers.ray_worker.RayPool`
by as many threads as it has actors (what the dispatcher does):

- ``sleep``: one ``WorkerSleep`` node (``tests/data/worker_nodes``) sleeping ``--seconds``
  s, a distinct value each so nothing is cached: the pool's own overhead and parallelism;
- ``tiny``: ``workflows/txt2img.json`` on the random-weight tiny SD1.5 checkpoint
  (``nodes.default_model``) at ``--size`` px and ``--steps`` steps, a new seed each
  prompt; skipped when the loader and sampler nodes are not installed. CPU-bound: on a
  machine with fewer cores than actors it shows the cores, not the pool.

Every actor is warmed up with one prompt before timing (model load, imports). Prints one
JSON object: per workload and actor count ``wall_s``, ``prompts_per_s`` and
``efficiency`` (throughput / (actors x one-actor throughput)). Ray is started here with
``max(actors)`` logical CPUs and stopped at the end. Usage::

    python bench/workers.py                      # 1, 2, 4 actors, 8 sleeps of 2 s, tiny model
    python bench/workers.py --actors 1,2 --prompts 4 --seconds 1 --no-tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.config import ServerConfig  # noqa: E402
from server.workers.base import QueueItem  # noqa: E402

WORKER_NODES = ROOT / "tests" / "data" / "worker_nodes"
#: The output nodes of both workloads (what validation would list as the prompt's outputs).
OUTPUT_CLASSES = ("WorkerSleep", "SaveImage")


def sleep_prompt(seconds: float, value: int) -> dict[str, Any]:
    """One WorkerSleep node."""
    return {"1": {"class_type": "WorkerSleep", "inputs": {"seconds": seconds, "value": value}}}


def tiny_prompt(seed: int, size: int, steps: int) -> dict[str, Any]:
    """txt2img.json at ``size`` px and ``steps`` steps with ``seed``."""
    prompt = copy.deepcopy(json.loads((ROOT / "workflows" / "txt2img.json").read_text()))
    for node in prompt.values():
        node.pop("_meta", None)
        inputs = node["inputs"]
        if node["class_type"] == "KSampler":
            inputs.update(seed=seed, steps=steps)
        elif node["class_type"] == "EmptyLatentImage":
            inputs.update(width=size, height=size)
    return prompt


def run_all(pool: Any, prompts: list[dict[str, Any]]) -> tuple[float, list[str]]:
    """Run ``prompts`` with one feeding thread per actor; (wall seconds, statuses)."""

    def one(index: int) -> str:
        prompt = prompts[index]
        outputs = [k for k, v in prompt.items() if v["class_type"] in OUTPUT_CLASSES]
        item = QueueItem(number=index, prompt_id=f"bench-{time.monotonic_ns()}-{index}", prompt=prompt,
                         extra_data={}, outputs=outputs)
        return pool.run(item, lambda event, data: None).status

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=pool.slots) as threads:
        statuses = list(threads.map(one, range(len(prompts))))
    return time.perf_counter() - started, statuses


def measure(base: Path, actors: list[int], make: Any, count: int) -> dict[str, Any]:
    """``make(i)`` prompts on pools of each size: wall time, throughput and efficiency."""
    from server.workers.ray_worker import pool_from_config

    config = ServerConfig(base_dir=base, custom_nodes_dirs=(WORKER_NODES,))
    config.ensure_dirs()
    rows: dict[str, Any] = {}
    serial: float | None = None
    offset = 0
    for n in actors:
        pool = pool_from_config(config, n, None)
        try:
            warm = [make(10_000_000 + offset + i) for i in range(n)]  # one per actor: loads and imports
            offset += 1000
            run_all(pool, warm)
            prompts = [make(offset + i) for i in range(count)]
            offset += 1000
            wall, statuses = run_all(pool, prompts)
        finally:
            pool.close()
        rate = count / wall
        serial = serial if serial is not None else rate / n
        rows[str(n)] = {"actors": n, "prompts": count, "wall_s": round(wall, 2), "prompts_per_s": round(rate, 3),
                        "efficiency": round(rate / (n * serial), 3),
                        "failed": sum(1 for s in statuses if s != "success")}
    return rows


def tiny_available() -> bool:
    """True if the registry has the nodes txt2img.json needs."""
    from nodes.registry import build_registry

    names = set(build_registry())
    wanted = {n["class_type"] for n in json.loads((ROOT / "workflows" / "txt2img.json").read_text()).values()}
    return wanted <= names


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the workloads, print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--actors", default="1,2,4", help="comma-separated pool sizes (default 1,2,4)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per measurement (default 8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="sleep per prompt (default 2)")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny-model workload")
    parser.add_argument("--size", type=int, default=64, help="tiny-model image size in px (default 64)")
    parser.add_argument("--steps", type=int, default=4, help="tiny-model sampling steps (default 4)")
    args = parser.parse_args(argv)
    actors = [int(a) for a in args.actors.split(",") if a.strip()]

    import ray

    ray.init(num_cpus=max(actors), include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             log_to_driver=False)
    result: dict[str, Any] = {"cpu_cores": __import__("os").cpu_count(), "workloads": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="noodlebox-bench-") as tmp:
            base = Path(tmp)
            result["workloads"]["sleep"] = {
                "seconds_per_prompt": args.seconds,
                "by_actors": measure(base, actors, lambda i: sleep_prompt(args.seconds, i), args.prompts),
            }
            if not args.no_tiny and tiny_available():
                from nodes.default_model import ensure_default_checkpoint
                from nodes.folders import Folders

                ensure_default_checkpoint(Folders(base))
                result["workloads"]["tiny"] = {
                    "size": args.size, "steps": args.steps,
                    "by_actors": measure(base, actors, lambda i: tiny_prompt(i, args.size, args.steps), args.prompts),
                }
            elif not args.no_tiny:
                result["workloads"]["tiny"] = {"skipped": "the loader/sampler nodes are not installed"}
    finally:
        ray.shutdown()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
