"""The editor without a model: first open, palette and search, widgets, typed sockets,
keyboard habits, persistence, and the API prompt it builds, checked against
``graph.workflow.to_prompt`` (the conversion the server's ``noodlebox convert`` does).
"""

from __future__ import annotations

from typing import Any

from web_editor import Editor, Server, workflow_summary


def build_image_graph(editor: Editor) -> dict[str, int]:
    """EmptyImage -> ImageInvert -> SaveImage, added by search and wired by mouse drags."""
    box = editor.canvas_box()
    left, top = box["x"], box["y"]
    editor.clear()
    ids = {
        "empty": editor.add_by_search("empty image", (left + 60, top + 120), "EmptyImage"),
        "invert": editor.add_by_search("invert image", (left + 420, top + 120), "ImageInvert"),
        "save": editor.add_by_search("save image", (left + 720, top + 120), "SaveImage"),
    }
    editor.connect(ids["empty"], "IMAGE", ids["invert"], "image")
    editor.connect(ids["invert"], "IMAGE", ids["save"], "images")
    return ids


def test_first_open_shows_the_default_txt2img_workflow(page: Any, server: Server) -> None:
    editor = Editor(page)
    types = sorted(n["type"] for n in editor.nodes())
    assert types == sorted(
        ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
         "SaveImage"]
    )
    assert len(editor.links()) == 9
    workflow = editor.workflow()
    assert workflow["version"] == 0.4
    ksampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    assert ksampler["widgets_values"][2:] == [20, 5, "euler", "normal", 1]  # cfg 5 suits the demo model
    # the first checkpoint the server lists (none yet: an empty name)
    info = server.get_json("/api/object_info/CheckpointLoaderSimple")
    choices = info.get("CheckpointLoaderSimple", {}).get("input", {}).get("required", {}).get("ckpt_name", [[""]])[0]
    loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
    assert loader["widgets_values"] == [choices[0] if choices else ""]


def test_palette_lists_categories_and_adds_nodes(page: Any, node_types: set[str]) -> None:
    editor = Editor(page)
    editor.clear()
    categories = page.eval_on_selector_all("#palette details", "els => els.map(e => e.dataset.category)")
    assert "image" in categories and "latent" in categories
    page.fill(".nb-palette-filter", "invert")
    item = page.locator(".nb-palette-item[data-node-type='ImageInvert']")
    assert item.get_attribute("title")  # the description is the tooltip
    item.click()
    assert [n["type"] for n in editor.nodes()] == ["ImageInvert"]


def test_search_by_display_name_and_typed_sockets_refuse_wrong_links(page: Any) -> None:
    editor = Editor(page)
    box = editor.canvas_box()
    editor.clear()
    latent = editor.add_by_search("Empty Latent Image", (box["x"] + 60, box["y"] + 100), "EmptyLatentImage")
    save = editor.add_by_search("SaveImage", (box["x"] + 500, box["y"] + 100), "SaveImage")
    editor.connect(latent, "LATENT", save, "images")  # LATENT into IMAGE: refused
    assert editor.links() == set()
    invert = editor.add_by_search("ImageInvert", (box["x"] + 60, box["y"] + 400), "ImageInvert")
    editor.connect(invert, "IMAGE", save, "images")
    assert editor.links() == {(invert, 0, save, 0, "IMAGE")}


def test_widgets_follow_the_node_definitions(page: Any) -> None:
    editor = Editor(page)
    editor.clear()
    page.evaluate("() => noodlebox.addNode('EmptyLatentImage', [100, 100])")
    page.evaluate("() => noodlebox.addNode('PrimitiveBoolean', [100, 300])")
    page.evaluate("() => noodlebox.addNode('LoadImage', [500, 100])")
    kinds = page.evaluate(
        "() => Object.fromEntries(noodlebox.graph._nodes.map(n => [n.type, n.widgets.map(w => [w.name, w.type])]))"
    )
    assert kinds["EmptyLatentImage"] == [["width", "number"], ["height", "number"], ["batch_size", "number"]]
    assert kinds["PrimitiveBoolean"] == [["value", "toggle"]]
    assert kinds["LoadImage"] == [["image", "combo"], ["upload", "button"]]
    latent = editor.node_ids("EmptyLatentImage")[0]
    editor.set_number(latent, "width", 770)  # step 8: the server's spec; typed values are kept as typed
    assert editor.widget_value(latent, "width") == 770
    load = next(n for n in editor.workflow()["nodes"] if n["type"] == "LoadImage")
    assert load["widgets_values"][1] == "image"  # the upload button's saved value, as ComfyUI saves it


def test_seed_control_after_generate_changes_the_seed_after_queueing(page: Any, node_types: set[str]) -> None:
    editor = Editor(page)
    editor.clear()
    node_id = page.evaluate(
        """() => {
            const node = noodlebox.addNode('PrimitiveInt', [100, 100]);
            return node.id;
        }"""
    )
    widgets = page.evaluate(
        "(id) => noodlebox.graph.getNodeById(id).widgets.map(w => [w.name, w.value, w.options.serialize])", node_id
    )
    names = [w[0] for w in widgets]
    assert names[:2] == ["value", "control_after_generate"]
    assert widgets[1][2] is False  # editor-only: never sent to the server
    assert "control_after_generate" not in editor.api_prompt()[str(node_id)]["inputs"]
    page.evaluate(
        "(id) => { const w = noodlebox.graph.getNodeById(id).widgets; w[0].value = 5; w[1].value = 'increment'; }",
        node_id,
    )
    page.evaluate("(id) => noodlebox.addNode('PreviewAny', [400, 100])", node_id)
    preview = editor.node_ids("PreviewAny")[0]
    editor.connect(node_id, editor.page.evaluate(
        "(id) => noodlebox.graph.getNodeById(id).outputs[0].name", node_id), preview, "source")
    page.fill("#batch-count", "2")
    ids = page.evaluate("() => noodlebox.queue()")
    assert len(ids) == 2
    assert editor.widget_value(node_id, "value") == 7  # incremented once per queued prompt


def test_export_api_matches_the_server_side_conversion(page: Any) -> None:
    from graph.workflow import to_prompt
    from server.commands.convert import real_registry

    editor = Editor(page)
    build_image_graph(editor)
    converted = page.evaluate("() => noodlebox.convert()")
    expected = to_prompt(converted["workflow"], real_registry())
    assert converted["output"] == expected
    with page.expect_download() as download:
        page.click("#export-api-button")
    assert download.value.suggested_filename == "workflow_api.json"


def test_graph_is_kept_across_reloads_and_keyboard_habits_work(page: Any) -> None:
    editor = Editor(page)
    ids = build_image_graph(editor)
    before = workflow_summary(editor.workflow())
    page.evaluate("() => noodlebox.persist()")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert workflow_summary(editor.workflow()) == before
    # click a node's title to select it, Ctrl+C / Ctrl+V duplicates it, Delete removes the selection
    node = next(n for n in editor.nodes() if n["id"] == ids["invert"])
    page.mouse.click(*editor.to_client(node["pos"][0] + 60, node["pos"][1] - 15))
    page.keyboard.press("Control+c")
    page.mouse.move(*editor.to_client(node["pos"][0] + 20, node["pos"][1] + 250))
    page.keyboard.press("Control+v")
    assert len(editor.node_ids("ImageInvert")) == 2
    page.keyboard.press("Delete")
    assert len(editor.node_ids("ImageInvert")) == 1
    with page.expect_download() as download:
        page.keyboard.press("Control+s")
    assert download.value.suggested_filename == "workflow.json"


def test_validation_errors_are_shown_on_the_nodes(page: Any) -> None:
    editor = Editor(page)
    editor.clear()
    save = page.evaluate("() => noodlebox.addNode('SaveImage', [200, 100]).id")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("() => Object.keys(noodlebox.view.errors).length > 0")
    errors = page.evaluate("() => noodlebox.view.errors")
    assert list(errors) == [str(save)]
    assert errors[str(save)][0]["input"] == "images"
    assert "rejected" in editor.status()


def test_dropping_a_link_on_empty_canvas_offers_matching_nodes_and_connects(page: Any) -> None:
    editor = Editor(page)
    box = editor.canvas_box()
    editor.clear()
    empty = editor.add_by_search("EmptyImage", (box["x"] + 80, box["y"] + 120), "EmptyImage")
    start = editor.socket(empty, "output", 0)
    editor.drag(start, (box["x"] + 520, box["y"] + 160))
    page.locator(".nb-search-input").type("invert image")
    offered = page.eval_on_selector_all(".nb-search-item", "items => items.map(i => i.dataset.nodeType)")
    assert offered[0] == "ImageInvert" and "EmptyLatentImage" not in offered  # only nodes taking an IMAGE
    page.keyboard.press("Enter")
    page.wait_for_function("() => noodlebox.graph._nodes.length === 2")
    invert = editor.node_ids("ImageInvert")[0]
    assert editor.links() == {(empty, 0, invert, 0, "IMAGE")}


def test_bypassed_and_muted_nodes_convert_as_the_server_converts_them(page: Any) -> None:
    from graph.workflow import to_prompt
    from server.commands.convert import real_registry

    editor = Editor(page)
    ids = build_image_graph(editor)
    node = next(n for n in editor.nodes() if n["id"] == ids["invert"])
    page.mouse.click(*editor.to_client(node["pos"][0] + 60, node["pos"][1] - 15))  # select it
    page.keyboard.press("Control+b")
    converted = page.evaluate("() => noodlebox.convert()")
    assert str(ids["invert"]) not in converted["output"]
    assert converted["output"][str(ids["save"])]["inputs"]["images"] == [str(ids["empty"]), 0]  # wired through
    assert converted["output"] == to_prompt(converted["workflow"], real_registry())
    page.keyboard.press("Control+b")  # back
    page.keyboard.press("Control+m")  # muted: gone, and so is the link from it
    converted = page.evaluate("() => noodlebox.convert()")
    assert str(ids["invert"]) not in converted["output"]
    assert "images" not in converted["output"][str(ids["save"])]["inputs"]
    assert converted["output"] == to_prompt(converted["workflow"], real_registry())
