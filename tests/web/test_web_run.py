"""Running a graph from the browser, without a model: queue from the toolbar, watch the
events arrive, find the saved image drawn in the SaveImage node and on disk, see it in
the history panel; then drop that PNG on a fresh editor and get the same graph back.
"""

from __future__ import annotations

import json
from typing import Any

from web_editor import ROOT, Editor, Server, require_nodes, wait_until, workflow_summary

from graph.workflow import to_prompt
from server.commands.convert import real_registry

RED = 0xFF0000


def build_and_run_red_image(editor: Editor, prefix: str) -> dict[str, Any]:
    """EmptyImage (red, 96x64) -> SaveImage, built with the mouse, queued with the Queue button."""
    page = editor.page
    box = editor.canvas_box()
    editor.clear()
    empty = editor.add_by_search("EmptyImage", (box["x"] + 80, box["y"] + 120), "EmptyImage")
    save = editor.add_by_search("Save Image", (box["x"] + 480, box["y"] + 120), "SaveImage")
    editor.connect(empty, "IMAGE", save, "images")
    editor.set_number(empty, "width", 96)
    editor.set_number(empty, "height", 64)
    editor.set_number(empty, "color", RED)
    page.evaluate(
        "([id, prefix]) => { noodlebox.graph.getNodeById(id).widgets[0].value = prefix; }", [save, prefix]
    )
    page.click("#queue-button")
    page.wait_for_function(
        "(id) => noodlebox.view.log.some(e => e.type === 'executed' && String(e.data.node) === String(id))",
        arg=save,
        timeout=60_000,
    )
    # the image is drawn once it has loaded from /view
    page.wait_for_function("(id) => noodlebox.graph.getNodeById(id).imageRects?.length > 0", arg=save)
    return {"empty": empty, "save": save}


def test_queue_from_the_toolbar_and_see_the_image_in_the_node_and_on_disk(page: Any, server: Server) -> None:
    editor = Editor(page)
    ids = build_and_run_red_image(editor, "web_red")
    types = [e["type"] for e in editor.events()]
    assert "execution_start" in types and "execution_success" in types
    executing = [e["data"]["node"] for e in editor.events("executing")]
    assert str(ids["empty"]) in executing and str(ids["save"]) in executing
    executed = next(e for e in editor.events("executed") if e["data"]["node"] == str(ids["save"]))
    image = executed["data"]["output"]["images"][0]
    assert image["type"] == "output" and image["filename"].startswith("web_red_")
    assert (server.output_dir / image["subfolder"] / image["filename"]).is_file()
    # the middle of the drawn image is red on the canvas
    x, y, w, h = page.evaluate(f"() => noodlebox.graph.getNodeById({ids['save']}).imageRects[0]")
    node = next(n for n in editor.nodes() if n["id"] == ids["save"])
    r, g, b, _ = editor.canvas_pixel(node["pos"][0] + x + w / 2, node["pos"][1] + y + h / 2)
    assert (r, g, b) == (255, 0, 0)
    # the history panel lists the run, with its thumbnail
    page.wait_for_selector(f".nb-history-item img[alt='{image['filename']}']")


def test_dropping_a_saved_png_restores_its_graph(page: Any, browser: Any, server: Server) -> None:
    editor = Editor(page)
    build_and_run_red_image(editor, "web_drop")
    saved = editor.workflow()
    png = wait_until(lambda: sorted(server.output_dir.glob("web_drop_*.png")), what="the saved PNG")[-1]
    # a fresh editor (new context: empty local storage) shows the default graph; drop the PNG on it
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    fresh = context.new_page()
    fresh.goto(server.url + "/")
    fresh.wait_for_selector("body[data-ready=true]")
    other = Editor(fresh)
    assert "EmptyImage" not in {n["type"] for n in other.nodes()}
    box = other.canvas_box()
    other.drop_file(png.read_bytes(), png.name, "image/png", (box["x"] + 300, box["y"] + 300))
    fresh.wait_for_function("() => noodlebox.graph._nodes.some(n => n.type === 'EmptyImage')")
    restored = other.workflow()
    context.close()
    assert workflow_summary(restored) == workflow_summary(saved)
    assert restored["links"] == saved["links"]


def test_dropping_workflow_json_files_loads_them(page: Any, node_types: set[str]) -> None:
    """The project's example workflows: the API prompt is laid out as a graph that queues the
    same prompt; the UI workflow (ComfyUI's editor format) converts as the server converts it."""
    require_nodes(node_types)
    editor = Editor(page)
    box = editor.canvas_box()
    where = (box["x"] + 300, box["y"] + 300)
    api_file = ROOT / "workflows" / "txt2img.json"
    editor.drop_file(api_file.read_bytes(), api_file.name, "application/json", where)
    page.wait_for_function("() => document.querySelector('#status-line').textContent.includes('txt2img.json')")
    prompt = json.loads(api_file.read_text())
    rebuilt = editor.api_prompt()
    assert {k: (v["class_type"], v["inputs"]) for k, v in rebuilt.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in prompt.items()
    }
    ui_file = ROOT / "workflows" / "txt2img.ui.json"
    editor.drop_file(ui_file.read_bytes(), ui_file.name, "application/json", where)
    page.wait_for_function("() => document.querySelector('#status-line').textContent.includes('txt2img.ui.json')")
    assert editor.api_prompt() == to_prompt(json.loads(ui_file.read_text()), real_registry())
