"""``noodlebox serve --workers ray``: the options, and a real server process on a Ray pool."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from workers_kit import WORKER_NODES, sleep_prompt

from server.commands import serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray-workers", "2"], "--ray-address and --ray-workers need --workers ray"),
        (["--workers", "local", "--ray-address", "auto"], "--ray-address and --ray-workers need --workers ray"),
        (["--workers", "ray", "--ray-workers", "0"], "--ray-workers must be at least 1, not 0"),
    ],
)
def test_bad_worker_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--base-dir", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.strip() == f"noodlebox: error: {message}"


def test_worker_options_reach_the_config(tmp_path: Path) -> None:
    parser = serve.argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--base-dir", str(tmp_path), "--workers", "ray",
                              "--ray-address", "10.0.0.5:6379", "--ray-workers", "4"])
    config = serve.config_from_args(args)
    assert (config.workers, config.ray_address, config.ray_workers) == ("ray", "10.0.0.5:6379", 4)
    default = serve.config_from_args(parser.parse_args(["serve", "--base-dir", str(tmp_path)]))
    assert (default.workers, default.ray_address, default.ray_workers) == ("local", None, None)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def test_serve_with_a_ray_worker_runs_prompts_there(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "server.commands.serve", "--port", "0", "--base-dir", str(tmp_path),
            "--custom-nodes", str(WORKER_NODES), "--workers", "ray", "--ray-workers", "1", "--no-default-model"]
    with open(log, "w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on" in line, log.read_text()
        url = line.rsplit(" ", 1)[-1].strip()
        (worker,) = _get(f"{url}/system_stats")["workers"]
        assert (worker["name"], worker["kind"], worker["alive"]) == ("ray-0", "ray", True)
        assert worker["pid"] != proc.pid  # the prompt runs in the actor's process, not the server's
        pid = _post(f"{url}/prompt", {"prompt": sleep_prompt(1.0, 7000)})["prompt_id"]
        deadline = time.monotonic() + 20
        while _get(f"{url}/queue")["running_on"] != {pid: "ray-0"}:
            assert time.monotonic() < deadline, "the prompt never ran on ray-0"
            time.sleep(0.05)
        while pid not in (history := _get(f"{url}/history")):
            assert time.monotonic() < deadline + 10, "no history"
            time.sleep(0.1)
        assert history[pid]["status"]["status_str"] == "success"
        assert history[pid]["outputs"]["1"]["text"] == ["700001"]
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    proc = subprocess.run([sys.executable, "-m", "server.commands.serve", "--base-dir", str(tmp_path),
                           "--workers", "ray", "--ray-address", "127.0.0.1:9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("noodlebox: error: cannot start Ray workers on 127.0.0.1:9: "), proc.stderr
    assert "Traceback" not in proc.stderr
