"""Load benchmark of the server: many clients posting pure-node prompts, many websocket listeners.

Starts ``noodlebox serve`` (``python -m server.commands.serve``) on a free loopback port
in a temporary folder, connects ``--listeners`` websockets, then ``--clients``
concurrent clients post ``--prompts`` prompts (PrimitiveInt -> IntMath -> PreviewAny,
a distinct value each so nothing is cached), each addressed to one listener
(round-robin ``client_id``). It waits until every prompt's ``executing`` null has
arrived, then prints one JSON object:

- ``accepted_per_s``: prompts answered 200 per second of the posting phase;
- ``post_p50_ms`` / ``post_p99_ms``: POST /prompt latency;
- ``events_delivered``: websocket messages received by all listeners;
- ``events_expected`` and ``events_lost`` (expected minus delivered; must be 0): each
  listener expects its greeting, three ``status`` broadcasts per prompt (queued, taken,
  finished) and, for each of its prompts, the per-prompt event count measured on one
  calibration prompt before the load;
- ``done_s``: first POST to last completion; ``peak_rss_mb``: the server's peak RSS.

Bounded (``--timeout``), loopback only, stops the server by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def prompt_for(i: int) -> dict[str, Any]:
    """Three pure nodes; ``i`` makes every prompt's cache signature unique."""
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": i}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 1, "op": "add"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }


def start_server(base: Path) -> tuple[subprocess.Popen[str], str]:
    """``noodlebox serve --port 0`` in ``base``; returns the process and its URL."""
    log = open(base / "serve.log", "w")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.commands.serve", "--listen", "127.0.0.1", "--port", "0",
         "--base-dir", str(base)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}; see {base / 'serve.log'}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process in MiB (0 where /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Listener:
    """One websocket client counting what it receives, per prompt."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.total = 0
        self.status = 0
        self.per_prompt: Counter[str] = Counter()
        self.done: set[str] = set()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self, session: aiohttp.ClientSession, url: str) -> None:
        """Read messages until the socket closes."""
        self.ws = await session.ws_connect(url.replace("http://", "ws://") + f"/ws?clientId={self.sid}")
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            self.total += 1
            message = json.loads(msg.data)
            data = message.get("data") or {}
            if message["type"] == "status":
                self.status += 1
                continue
            prompt_id = data.get("prompt_id")
            if prompt_id:
                self.per_prompt[prompt_id] += 1
                if message["type"] == "executing" and data.get("node") is None:
                    self.done.add(prompt_id)


async def _wait(predicate: Any, deadline: float) -> bool:
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run_load(url: str, prompts: int, clients: int, listeners: int, timeout: float) -> dict[str, Any]:
    """The benchmark against a running server at ``url``."""
    deadline = time.monotonic() + timeout
    connector = aiohttp.TCPConnector(limit=clients + listeners + 8)
    async with aiohttp.ClientSession(connector=connector) as session:
        # calibration: events one listener gets for one prompt of this shape
        probe = Listener("calibration")
        probe_task = asyncio.create_task(probe.run(session, url))
        await _wait(lambda: probe.status >= 1, deadline)
        async with session.post(f"{url}/prompt", json={"prompt": prompt_for(-1), "client_id": "calibration"}) as r:
            probe_id = (await r.json())["prompt_id"]
        await _wait(lambda: probe_id in probe.done, deadline)
        per_prompt = probe.per_prompt[probe_id]
        assert probe.ws is not None
        await probe.ws.close()
        await probe_task

        group = [Listener(f"listener-{i}") for i in range(listeners)]
        tasks = [asyncio.create_task(li.run(session, url)) for li in group]
        await _wait(lambda: all(li.status >= 1 for li in group), deadline)

        latencies: list[float] = []
        assigned: dict[str, Listener] = {}
        counter = iter(range(prompts))

        async def poster() -> None:
            """One client: posts prompts until the shared counter runs out."""
            for i in counter:
                listener = group[i % listeners]
                body = {"prompt": prompt_for(i), "client_id": listener.sid}
                start = time.perf_counter()
                async with session.post(f"{url}/prompt", json=body) as resp:
                    data = await resp.json()
                latencies.append((time.perf_counter() - start) * 1000)
                if resp.status == 200:
                    assigned[data["prompt_id"]] = listener

        t0 = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(clients)))
        post_s = time.perf_counter() - t0
        await _wait(lambda: all(pid in li.done for pid, li in assigned.items()), deadline)
        expected_status = 1 + 3 * len(assigned)
        await _wait(lambda: all(li.status >= expected_status for li in group), min(deadline, time.monotonic() + 5))
        done_s = time.perf_counter() - t0
        for li in group:
            assert li.ws is not None
            await li.ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    delivered = sum(li.total for li in group)
    expected = listeners * expected_status + per_prompt * len(assigned)
    latencies.sort()
    return {
        "prompts": prompts,
        "clients": clients,
        "listeners": listeners,
        "accepted": len(assigned),
        "accepted_per_s": round(len(assigned) / post_s, 1),
        "post_p50_ms": round(statistics.median(latencies), 2),
        "post_p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "events_per_prompt": per_prompt,
        "events_delivered": delivered,
        "events_expected": expected,
        "events_lost": expected - delivered,
        "done_s": round(done_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON line; exit 1 if any event was lost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--listeners", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="noodlebox-bench-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            result = asyncio.run(run_load(url, args.prompts, args.clients, args.listeners, args.timeout))
            result["peak_rss_mb"] = round(peak_rss_mb(proc.pid), 1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(json.dumps(result))
    return 0 if result["events_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
