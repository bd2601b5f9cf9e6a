"""``noodlebox run FILE``: run a workflow here, without a server, and print the images it wrote.

``FILE`` is an API prompt, a UI (editor) workflow or a PNG with an embedded workflow
(read as ``validate`` and ``convert`` read it). The prompt is validated as ``POST /prompt``
would (on failure ComfyUI's error JSON is printed and the exit code is 2), then run by the
same :class:`graph.executor.Executor` the server uses. SaveImage's PNG carries the executed
prompt (constants coerced) as its ``prompt`` chunk and, for a UI workflow, the workflow.

Progress goes to standard error: tqdm bars (nodes, and the sampler's steps) on a terminal,
plain lines otherwise. ``--json`` prints every executor event on standard output instead,
one ``{"type": ..., "data": ...}`` object per line, ending with a ``result`` line. Without
``--json`` standard output holds only the written image paths, one per line.

Exit codes: 0 done; 1 a node failed while running; 2 bad input (one line on stderr, or
the validation JSON on stdout); 130 interrupted (Ctrl-C stops at the next node or sampler
step; images are written atomically, so no half-written file is left).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from graph.schema import Registry
from graph.validate import validate_prompt
from server.cli import UserError
from server.commands.convert import add_custom_nodes_option, load_workflow
from server.config import check_cache_policy

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("off", "on", "auto")  # diffusion.unet_patches.compute.COMPILE_MODES (server imports no torch)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser(
        "run",
        help="run a workflow (UI or API JSON, or PNG) and print the images it wrote",
        description="Validate and run a workflow here, without a server. Prints the written image paths "
        "(exit 0), ComfyUI's validation error JSON (exit 2), or a one-line reason (exit 1 if a node failed, "
        "2 for bad input, 130 when interrupted).",
    )
    p.add_argument("file", type=Path, help="workflow file: UI JSON, API JSON or PNG")
    p.add_argument("--base-dir", type=Path, default=Path.cwd(),
                   help="folder holding models/, input/, output/, temp/ (default: the current folder)")
    p.add_argument("--models", type=Path, default=None, help="models folder, searched first (default BASE/models)")
    p.add_argument("--input", type=Path, default=None, help="input folder (default BASE/input)")
    p.add_argument("-o", "--output", type=Path, default=None, help="output folder (default BASE/output)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="override an input, e.g. --set 3.seed=5 (VALUE is JSON if it parses, else a string); "
                        "repeatable")
    p.add_argument("--json", action="store_true", help="print the events as JSON lines on standard output")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="model weights precision (default auto)")
    p.add_argument("--compile", choices=COMPILE_MODES, default="off",
                   help="torch.compile UNets and VAE decoders: off (default), on, or auto (only where it wins)")
    p.add_argument("--cache", default="classic", help="result cache policy: classic, lru:N, ram:GB or none")
    add_custom_nodes_option(p)
    p.set_defaults(func=_run)


# -- building the prompt ------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"3.seed=5"`` -> ``("3", "seed", 5)``; the value is JSON when it parses, else the raw string."""
    target, sep, raw = text.partition("=")
    node_id, dot, name = target.partition(".")
    if not sep or not dot or not node_id or not name:
        raise UserError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. --set 3.seed=5")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node_id, name, value


def apply_overrides(prompt: dict[str, Any], overrides: list[str], registry: Registry) -> dict[str, Any]:
    """A copy of ``prompt`` with each ``NODE.INPUT=VALUE`` set; an unknown node or input is a UserError."""
    prompt = {node_id: dict(node) if isinstance(node, dict) else node for node_id, node in prompt.items()}
    for text in overrides:
        node_id, name, value = parse_override(text)
        node = prompt.get(node_id)
        if not isinstance(node, dict):
            raise UserError(f"--set {text!r}: the workflow has no node {node_id!r} (nodes: {', '.join(prompt)})")
        schema = registry.get(node.get("class_type", ""))
        inputs = dict(node.get("inputs") or {})
        if name not in inputs and (schema is None or schema.input(name) is None):
            raise UserError(f"--set {text!r}: node {node_id} ({node.get('class_type')}) has no input {name!r}")
        inputs[name] = value
        node["inputs"] = inputs
    return prompt


def build_folders(args: argparse.Namespace) -> Any:
    """The :class:`nodes.folders.Folders` of the arguments (``--models`` searched before BASE/models)."""
    from nodes.folders import FolderConfigError, Folders

    try:
        folders = Folders(args.base_dir, input_dir=args.input, output_dir=args.output)
    except FolderConfigError as exc:
        raise UserError(str(exc)) from None
    if args.models is not None:
        for key in list(folders):
            for path in reversed(folders.paths(key)):
                if folders.models_dir in path.parents:
                    folders.add_path(key, args.models / path.relative_to(folders.models_dir), is_default=True)
    return folders


def mentions(prompt: dict[str, Any], value: str) -> bool:
    """True if some node has the constant ``value`` as an input."""
    return any(isinstance(node, dict) and value in (node.get("inputs") or {}).values() for node in prompt.values())


# -- reporting ------------------------------------------------------------------------------


class JsonEvents:
    """``--json``: each event as one JSON line on ``stream`` (preview images are left out)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        """Write one event."""
        if event == "preview":  # an in-memory image, not JSON; previews are the server's business
            return
        line = json.dumps({"type": event, "data": data}, ensure_ascii=False, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Nothing to tidy."""


class Progress:
    """Human progress on ``stream``: tqdm bars on a terminal, one line per node and step otherwise."""

    def __init__(self, prompt: dict[str, Any], stream: TextIO, bars: bool | None = None) -> None:
        self.stream = stream
        self.classes = {n: node.get("class_type", "?") for n, node in prompt.items() if isinstance(node, dict)}
        self.bars = stream.isatty() if bars is None else bars
        self.nodes_bar: Any = None
        self.steps_bar: Any = None
        self.steps_node: str | None = None
        self.started = time.monotonic()
        if self.bars:
            from tqdm import tqdm

            self._tqdm = tqdm
            self._width = _columns(stream)
            self.nodes_bar = tqdm(total=len(self.classes), desc="nodes", unit="node", file=stream, position=0,
                                  leave=True, **self._width)

    def _label(self, node_id: str) -> str:
        return f"#{node_id} {self.classes.get(node_id, '?')}"

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        """Show one executor event."""
        if event == "execution_cached" and data.get("nodes"):
            cached = [n for n in data["nodes"] if n in self.classes]
            if self.bars:
                self.nodes_bar.update(len(cached))
            else:
                self._line(f"cached: {', '.join(self._label(n) for n in cached)}")
        elif event == "executing" and data.get("node") is not None:
            if self.bars:
                self.nodes_bar.set_description_str(self._label(data["node"]))
            else:
                self._line(f"running {self._label(data['node'])}")
        elif event == "progress":
            self._step(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 1)))
        elif event == "progress_state":
            for node_id, state in (data.get("nodes") or {}).items():
                if state.get("state") == "finished" and self.bars:
                    self.nodes_bar.update(1)
                if state.get("state") in ("finished", "error") and node_id == self.steps_node:
                    self._end_steps()

    def _step(self, node_id: str, value: int, total: int) -> None:
        if not self.bars:
            self._line(f"  {self._label(node_id)}: step {value}/{total}")
            return
        if self.steps_node != node_id or self.steps_bar is None:
            self._end_steps()
            self.steps_node = node_id
            self.steps_bar = self._tqdm(total=total, desc=self._label(node_id), unit="step", file=self.stream,
                                        position=1, leave=False, **self._width)
        self.steps_bar.total = total
        self.steps_bar.update(value - self.steps_bar.n)

    def _end_steps(self) -> None:
        if self.steps_bar is not None:
            self.steps_bar.close()
        self.steps_bar = None
        self.steps_node = None

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Close the bars and say how long it took."""
        self._end_steps()
        if self.nodes_bar is not None:
            self.nodes_bar.close()
        self._line(f"finished in {time.monotonic() - self.started:.2f} s")


def _columns(stream: TextIO) -> dict[str, Any]:
    """tqdm's size options for ``stream``: follow the terminal, or 80x24 where it reports 0x0
    (tqdm draws nothing on a pseudo-terminal without a size, e.g. under ``script``)."""
    import os

    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    return {"dynamic_ncols": True} if size.columns > 0 and size.lines > 0 else {"ncols": 80, "nrows": 24}


# -- running --------------------------------------------------------------------------------


def image_paths(outputs: dict[str, dict], folders: Any) -> list[Path]:
    """The files of every ``images`` entry of the run's ui outputs (output, temp or input folder)."""
    paths = []
    for ui in outputs.values():
        for image in (ui or {}).get("images") or []:
            try:
                folder = folders.directory(image.get("type", "output"))
            except KeyError:
                continue
            subfolder = image.get("subfolder") or ""
            paths.append(folder / subfolder / image["filename"] if subfolder else folder / image["filename"])
    return paths


def run_interruptibly(job: Callable[[], Any], interrupt: Callable[[], None]) -> tuple[Any, bool]:
    """Run ``job`` in a thread; on Ctrl-C call ``interrupt`` and wait for the job to stop.

    Returns ``(result, interrupted)``. The main thread only waits, so KeyboardInterrupt
    lands here rather than inside a node; the job sees the interruption at its next check.
    The wait is on an Event the job sets, not on ``Thread.join``: a join that Ctrl-C cuts
    short can leave the thread marked as finished while it still runs (Python 3.11).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = job()
        except BaseException as exc:  # handed back to the main thread below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="noodlebox-run", daemon=True).start()
    interrupted = False
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            interrupted = True
        if interrupted:  # again at every tick: a Ctrl-C before the run began must still reach it
            interrupt()
    if "error" in box:
        raise box["error"]
    return box.get("result"), interrupted


def _run(args: argparse.Namespace) -> int:
    try:
        check_cache_policy(args.cache)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for folder in args.custom_nodes:
        if not folder.is_dir():
            raise UserError(f"--custom-nodes {folder}: not a folder")
    if not args.file.exists():
        raise UserError(f"{args.file}: no such file")

    from graph.executor import Executor
    from nodes.api import Services
    from nodes.default_model import DEFAULT_CHECKPOINT, ensure_default_checkpoint
    from nodes.registry import build_registry

    folders = build_folders(args)
    registry = build_registry(Services(folders=folders, precision=args.precision, compile=args.compile),
                              args.custom_nodes)
    prompt, workflow = load_workflow(args.file, registry)
    prompt = apply_overrides(prompt, args.overrides, registry)
    if mentions(prompt, DEFAULT_CHECKPOINT):
        ensure_default_checkpoint(folders)  # a fresh machine: the shipped demo model

    result = validate_prompt(prompt, registry)
    if not result.ok:
        print(json.dumps(result.response_body(), ensure_ascii=False))
        return 2
    if result.node_errors:  # some outputs are valid and run; say which will not
        print(json.dumps({"node_errors": result.node_errors}, ensure_ascii=False), file=sys.stderr)
    try:
        folders.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folders.output_dir}: cannot create the output folder ({exc.strerror})") from None

    sink: JsonEvents | Progress = JsonEvents(sys.stdout) if args.json else Progress(result.prompt, sys.stderr)
    if args.json:  # what auto picked on this machine, and why, before any event
        sink("runtime", registry.services.runtime_choices())
    executor = Executor(registry, cache=args.cache)
    prompt_id = uuid.uuid4().hex
    # No live previews here: nothing shows them, and making them costs time at every step.
    extra_data: dict[str, Any] = {"preview_method": "none"}
    if workflow is not None:
        extra_data["extra_pnginfo"] = {"workflow": workflow}
    try:
        run, interrupted = run_interruptibly(
            lambda: executor.run(result.prompt, prompt_id, outputs=result.outputs, extra_data=extra_data, sink=sink),
            executor.interrupt,
        )
    finally:
        sink.close()
    paths = image_paths(run.outputs, folders)
    if args.json:
        sink(
            "result",
            {"prompt_id": prompt_id, "status": run.status, "images": [str(p) for p in paths],
             "executed": run.executed, "outputs": run.outputs},
        )
    else:
        for path in paths:
            print(path)
    if run.status == "success":
        return 0
    error = run.error or {}
    where = f"node {error.get('node_id')} ({error.get('node_type')})" if error.get("node_id") else "the prompt"
    if run.status == "interrupted" or interrupted:
        print(f"noodlebox: interrupted at {where}", file=sys.stderr)
        return 130
    message = (str(error.get("exception_message") or "failed").strip().splitlines() or ["failed"])[0]
    print(f"noodlebox: error: {where} failed: {error.get('exception_type', 'Error')}: {message}", file=sys.stderr)
    return 1
