"""The first prompt after ``noodlebox serve`` starts: how long its checkpoint loader takes, against an older commit.

Issue 18 measured the loader node of a fresh server's first txt2img prompt (full-size SD1.5,
256x256, 4 steps) at 7.2-8.0 s, against 2.8 s for ComfyUI: that time held the imports of
torch, diffusers and transformers as well as the file's read. This script starts a server
from this tree and, with ``--against COMMIT``, one from a git worktree of that commit (made
once under the temp folder), in turn, each on a fresh base folder holding only the
checkpoint. It waits ``--idle`` seconds after the server says it is serving (a user opening
the editor; noodlebox imports the model runtime meanwhile), posts the prompt and times, from
the websocket's events, the loader node and the whole prompt. Prints one JSON object::

    python bench/first_prompt.py --against e32e732 [--rounds 2] [--idle 8] [--ckpt FILE]

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _worktree(commit: str) -> Path:
    """A git worktree of ``commit`` under the temp folder (made once)."""
    target = Path(tempfile.gettempdir()) / f"noodlebox-worktree-{commit}"
    if not target.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(target), commit], cwd=ROOT, check=True,
                       capture_output=True)
    return target


async def _first_prompt(tree: Path, ckpt: Path, idle: float, threads: int | None) -> dict[str, Any]:
    """Start a server from ``tree``, wait ``idle`` s, run the txt2img prompt once; the loader's and total times."""
    import aiohttp
    from txt2img import txt2img_prompt

    with tempfile.TemporaryDirectory(prefix="noodlebox-first-") as tmp:
        base = Path(tmp)
        (base / "models" / "checkpoints").mkdir(parents=True)
        (base / "models" / "checkpoints" / ckpt.name).symlink_to(ckpt.resolve())
        env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        proc = subprocess.Popen([sys.executable, "-m", "server.commands.serve", "--port", "0", "--base-dir",
                                 str(base)], cwd=tree, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "serving on" not in line:
                raise SystemExit(f"{tree}: the server did not start: {line!r}")
            url = line.rsplit(" ", 1)[-1].strip()
            await asyncio.sleep(idle)
            sid = uuid.uuid4().hex
            async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws?clientId={sid}") as ws:
                prompt = txt2img_prompt(ckpt.name, 256, 4, 42)
                start = time.perf_counter()
                async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": sid}) as resp:
                    assert resp.status == 200, await resp.text()
                began: dict[str, float] = {}
                took: dict[str, float] = {}
                current: str | None = None
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    if event["type"] != "executing":
                        continue
                    now = time.perf_counter()
                    if current is not None:
                        took[current] = now - began[current]
                    current = event["data"]["node"]
                    if current is None:
                        break
                    began[current] = now
                total = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {"loader_s": round(took.get("4", float("nan")), 3), "total_s": round(total, 3)}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, alternate the servers, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="COMMIT", help="also time a server of this commit")
    parser.add_argument("--ckpt", type=Path, default=None, help="an SD1.5 checkpoint (default: the random full one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=float, default=8.0, help="seconds between start and the first prompt")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the servers")
    args = parser.parse_args(argv)
    from txt2img import ensure_checkpoint

    ckpt = ensure_checkpoint(args.ckpt)
    ckpt.read_bytes()  # in the page cache, as the issue measured it
    trees = {"this tree": ROOT, **({args.against: _worktree(args.against)} if args.against else {})}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(asyncio.run(_first_prompt(tree, ckpt, args.idle, args.threads)))
    best = {name: min(r["loader_s"] for r in results) for name, results in runs.items()}
    report: dict[str, Any] = {"checkpoint": str(ckpt), "idle_s": args.idle, "runs": runs, "best_loader_s": best,
                              "load_average": os.getloadavg()[0]}
    if args.against:
        report["loader_ratio_to_commit"] = round(best["this tree"] / best[args.against], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
