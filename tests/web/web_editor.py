"""Helpers for the browser tests: a real server process, and ``Editor``, a page object
that drives the editor the way a person does (double-clicks, typing, mouse drags between
the socket positions litegraph computes) and reads the graph back from the page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Nodes of the seven-node txt2img graph (written by other engineers; tests wait for them).
TXT2IMG_NODES = ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage")


def require_nodes(node_types: set[str], needed: tuple[str, ...] = TXT2IMG_NODES) -> None:
    """Skip (pending) when nodes a test needs are not registered on the server yet."""
    missing = [name for name in needed if name not in node_types]
    if missing:
        pytest.skip(f"pending: the server has no {', '.join(missing)} node yet")


@dataclass
class Server:
    """A running ``noodlebox serve``."""

    url: str
    base_dir: Path
    process: subprocess.Popen

    @property
    def output_dir(self) -> Path:
        """Where SaveImage writes."""
        return self.base_dir / "output"

    def get_json(self, path: str) -> object:
        """GET an API route and parse it."""
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def post_json(self, path: str, body: object) -> object:
        """POST JSON to an API route and parse the answer."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


def start_server(base_dir: Path, *extra: str) -> Server:
    """Start ``python -m server.commands.serve --port 0`` and read the port it printed.

    The server's output goes to ``base_dir/serve.log``, a file, never a pipe: nobody reads a
    pipe after the start line, so once its 64 KiB buffer is full (warnings, progress lines of
    earlier tests) the server blocks on its next write and every later request hangs.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log_path = base_dir / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.commands.serve", "--port", "0", "--base-dir", str(base_dir), *extra],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"serving on (http://\S+)", log_path.read_text(errors="replace"))
        if match:
            return Server(url=match.group(1).rstrip("/"), base_dir=base_dir, process=process)
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not say where it serves within 60 s")


def stop_server(server: Server) -> None:
    """SIGTERM, then wait (kill if it hangs)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def wait_until(predicate: Any, timeout: float = 60.0, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Editor:
    """The editor in a Playwright page, driven through the mouse and keyboard."""

    def __init__(self, page: Any) -> None:
        self.page = page

    # --- reading the page -------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """Every node: id, type, title, pos, size."""
        return self.page.evaluate(
            """() => noodlebox.graph._nodes.map(n => ({id: n.id, type: n.type, title: n.title,
                pos: [...n.pos], size: [...n.size]}))"""
        )

    def node_ids(self, node_type: str) -> list[int]:
        """Ids of the nodes of one type, in creation order."""
        return [n["id"] for n in self.nodes() if n["type"] == node_type]

    def links(self) -> set[tuple[Any, ...]]:
        """Links as (origin id, origin slot, target id, target slot, type)."""
        raw = self.page.evaluate("() => noodlebox.graph.serialize().links")
        return {tuple(link[1:]) for link in raw}

    def workflow(self) -> dict[str, Any]:
        """The UI workflow the editor would save."""
        return self.page.evaluate("() => noodlebox.convert().workflow")

    def api_prompt(self) -> dict[str, Any]:
        """The API prompt the editor would queue."""
        return self.page.evaluate("() => noodlebox.convert().output")

    def widget_value(self, node_id: int, name: str) -> Any:
        """The current value of a node's widget."""
        return self.page.evaluate(
            "([id, name]) => noodlebox.graph.getNodeById(id).widgets.find(w => w.name === name).value",
            [node_id, name],
        )

    def status(self) -> str:
        """The status line's text."""
        return self.page.inner_text("#status-line")

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Websocket events the editor received, optionally of one type."""
        log = self.page.evaluate("() => noodlebox.view.log.map(e => ({type: e.type, data: e.data}))")
        return [e for e in log if event_type is None or e["type"] == event_type]

    # --- geometry -----------------------------------------------------------------
    def to_client(self, x: float, y: float) -> tuple[float, float]:
        """Page coordinates of a graph position."""
        cx, cy = self.page.evaluate("([x, y]) => noodlebox.toClient([x, y])", [x, y])
        return cx, cy

    def canvas_box(self) -> dict[str, float]:
        """The canvas element's bounding box in page coordinates."""
        return self.page.locator("#graph-canvas").bounding_box()

    def socket(self, node_id: int, kind: str, index: int) -> tuple[float, float]:
        """Page coordinates of an input or output socket, from litegraph's own layout."""
        x, y = self.page.evaluate(
            "([id, isInput, i]) => noodlebox.graph.getNodeById(id).getConnectionPos(isInput, i)",
            [node_id, kind == "input", index],
        )
        return self.to_client(x, y)

    def slot_index(self, node_id: int, kind: str, name: str) -> int:
        """Index of the input/output socket called ``name``."""
        names = self.page.evaluate(
            "([id, kind]) => noodlebox.graph.getNodeById(id)[kind].map(s => s.name)",
            [node_id, "inputs" if kind == "input" else "outputs"],
        )
        return names.index(name)

    def widget_center(self, node_id: int, name: str) -> tuple[float, float]:
        """Page coordinates of the middle of a widget."""
        x, y = self.page.evaluate(
            """([id, name]) => {
                const node = noodlebox.graph.getNodeById(id);
                const w = node.widgets.find(w => w.name === name);
                const h = w.computeSize ? w.computeSize(node.size[0])[1] : LiteGraph.NODE_WIDGET_HEIGHT;
                return [node.pos[0] + node.size[0] / 2, node.pos[1] + (w.last_y ?? w.y) + h / 2];
            }""",
            [node_id, name],
        )
        return self.to_client(x, y)

    # --- acting ------------------------------------------------------------------
    def clear(self) -> None:
        """Empty the canvas with the toolbar's Clear button (accepting its confirmation)."""
        self.page.once("dialog", lambda dialog: dialog.accept())
        self.page.click("#clear-button")
        self.page.wait_for_function("() => noodlebox.graph._nodes.length === 0")

    def add_by_search(self, query: str, at: tuple[float, float], expect_type: str) -> int:
        """Double-click the empty canvas at page point ``at``, type ``query``, press Enter."""
        before = {n["id"] for n in self.nodes()}
        self.page.mouse.dblclick(*at)
        search = self.page.locator(".nb-search-input")
        search.wait_for()
        search.type(query, delay=10)
        self.page.wait_for_selector(f".nb-search-item.selected[data-node-type='{expect_type}']")
        self.page.keyboard.press("Enter")
        self.page.wait_for_function("(n) => noodlebox.graph._nodes.length > n", arg=len(before))
        added = [n for n in self.nodes() if n["id"] not in before]
        assert len(added) == 1 and added[0]["type"] == expect_type, added
        return added[0]["id"]

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """Press at ``start``, move in steps to ``end``, release (a real mouse drag)."""
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move(*end, steps=12)
        self.page.mouse.up()

    def connect(self, source: int, output: str, target: int, input_name: str) -> None:
        """Drag a link from a named output socket to a named input socket."""
        start = self.socket(source, "output", self.slot_index(source, "output", output))
        end = self.socket(target, "input", self.slot_index(target, "input", input_name))
        self.drag(start, end)

    def set_number(self, node_id: int, name: str, value: float) -> None:
        """Click a number widget's middle, type the value into litegraph's prompt, press Enter."""
        self.page.mouse.click(*self.widget_center(node_id, name))
        field = self.page.locator(".graphdialog input.value")
        field.wait_for()
        field.fill(str(value))
        field.press("Enter")

    def choose(self, node_id: int, name: str, value: str) -> None:
        """Click a combo widget's middle and pick ``value`` from litegraph's menu."""
        self.page.mouse.click(*self.widget_center(node_id, name))
        self.page.locator(".litecontextmenu .litemenu-entry", has_text=value).first.click()

    def set_text(self, node_id: int, name: str, text: str) -> None:
        """Click a multiline text widget, type into the editor's textarea, press OK."""
        self.page.mouse.click(*self.widget_center(node_id, name))
        area = self.page.locator(".graphdialog textarea")
        area.wait_for()
        area.fill(text)
        self.page.click(".graphdialog button")

    def drop_file(self, data: bytes, name: str, mime: str, at: tuple[float, float]) -> None:
        """Drop a file on the page at ``at``, as a drag from the desktop does."""
        import base64

        self.page.evaluate(
            """async ({b64, name, mime, x, y}) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, {type: mime}));
                const target = document.elementFromPoint(x, y);
                for (const type of ["dragenter", "dragover", "drop"]) {
                    target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, clientX: x, clientY: y,
                        bubbles: true, cancelable: true}));
                }
            }""",
            {"b64": base64.b64encode(data).decode(), "name": name, "mime": mime, "x": at[0], "y": at[1]},
        )

    def drop_file_on_node(self, data: bytes, name: str, mime: str, node_id: int) -> None:
        """Drop a file on the middle of a node, as a drag from the desktop does.

        The node's page position is worked out in the same script that dispatches the events:
        between two Playwright calls the page may lay itself out again (the queue panel fills
        from the history, a status line changes), and a position computed earlier would then
        point at empty canvas, where a drop opens the file instead of uploading it.
        """
        import base64

        error = self.page.evaluate(
            """({b64, name, mime, id}) => {
                const node = noodlebox.graph.getNodeById(id);
                const gx = node.pos[0] + node.size[0] / 2, gy = node.pos[1] + node.size[1] / 2;
                const [x, y] = noodlebox.toClient([gx, gy]);
                const target = document.elementFromPoint(x, y);
                if (!target) return `node ${id} is off screen at (${x}, ${y})`;
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, {type: mime}));
                for (const type of ["dragenter", "dragover", "drop"]) {
                    target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, clientX: x, clientY: y,
                        bubbles: true, cancelable: true}));
                }
                return null;
            }""",
            {"b64": base64.b64encode(data).decode(), "name": name, "mime": mime, "id": node_id},
        )
        assert error is None, error

    def canvas_pixel(self, x: float, y: float) -> list[int]:
        """RGBA of the canvas at graph position (x, y) as drawn on screen."""
        return self.page.evaluate(
            """([x, y]) => {
                const [cx, cy] = noodlebox.canvas.ds.convertOffsetToCanvas([x, y]);
                const ctx = noodlebox.elements.canvas.getContext("2d");
                return [...ctx.getImageData(Math.round(cx), Math.round(cy), 1, 1).data];
            }""",
            [x, y],
        )


def workflow_summary(workflow: dict[str, Any]) -> dict[str, Any]:
    """What must survive a save/load: node ids, types and widget values, and the links."""
    return {
        "nodes": {str(n["id"]): (n["type"], json.dumps(n.get("widgets_values"))) for n in workflow["nodes"]},
        "links": sorted(tuple(link[:6]) for link in workflow["links"]),
    }


