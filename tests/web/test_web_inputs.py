"""Inputs beyond plain widgets: a widget turned into a socket from the node's menu, an image
uploaded by dropping it on LoadImage, and the queue controls of the toolbar.
"""

from __future__ import annotations

import io
import json
from typing import Any

from web_editor import Editor, Server


def test_a_widget_converted_to_an_input_takes_a_link(page: Any) -> None:
    from graph.workflow import to_prompt
    from server.commands.convert import real_registry

    editor = Editor(page)
    editor.clear()
    page.evaluate("() => noodlebox.addNode('EmptyLatentImage', [200, 150])")
    page.evaluate("() => noodlebox.addNode('PrimitiveInt', [-150, 150])")
    latent = editor.node_ids("EmptyLatentImage")[0]
    number = editor.node_ids("PrimitiveInt")[0]
    node = next(n for n in editor.nodes() if n["id"] == latent)
    page.mouse.click(*editor.to_client(node["pos"][0] + 60, node["pos"][1] - 15), button="right")
    page.locator(".litemenu-entry", has_text="Convert width to input").click()
    output = page.evaluate(f"() => noodlebox.graph.getNodeById({number}).outputs[0].name")
    editor.connect(number, output, latent, "width")
    converted = page.evaluate("() => noodlebox.convert()")
    assert converted["output"][str(latent)]["inputs"]["width"] == [str(number), 0]
    saved = next(n for n in converted["workflow"]["nodes"] if n["id"] == latent)
    assert saved["inputs"][0]["widget"] == {"name": "width"}
    assert converted["output"] == to_prompt(converted["workflow"], real_registry())


def test_dropping_an_image_on_load_image_uploads_it(page: Any, server: Server) -> None:
    from PIL import Image

    editor = Editor(page)
    editor.clear()
    load = page.evaluate("() => noodlebox.addNode('LoadImage', [150, 100]).id")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (0, 128, 255)).save(buffer, format="PNG")
    with page.expect_response(lambda r: r.url.endswith("/upload/image")) as upload:
        editor.drop_file_on_node(buffer.getvalue(), "blue swatch.png", "image/png", load)
    assert upload.value.status == 200, upload.value.text()  # a failed upload says why, not a timeout
    page.wait_for_function(f"() => noodlebox.graph.getNodeById({load}).widgets[0].value === 'blue swatch.png'")
    assert (server.base_dir / "input" / "blue swatch.png").is_file()
    assert editor.api_prompt()[str(load)]["inputs"] == {"image": "blue swatch.png"}
    # the node shows the uploaded picture, fetched back from /view?type=input
    page.wait_for_function(f"() => noodlebox.graph.getNodeById({load}).imgs?.[0]?.naturalWidth === 32")


def test_a_file_dropped_in_the_frame_its_node_was_added_is_uploaded(page: Any, server: Server) -> None:
    """The drop is dispatched in the same script as addNode, before any animation frame: the
    editor must find the node from its geometry, not from the areas of the last drawn frame
    (that stale lookup opened the file as a workflow instead, whenever the test's Python side
    issued the drop within one frame of adding the node, e.g. once PIL's PNG encoder was warm)."""
    import base64

    from PIL import Image

    Editor(page).clear()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buffer, format="PNG")
    with page.expect_response(lambda r: r.url.endswith("/upload/image"), timeout=10_000) as upload:
        load = page.evaluate(
            """({b64}) => {
                const node = noodlebox.addNode('LoadImage', [150, 100]);
                const [x, y] = noodlebox.toClient([node.pos[0] + node.size[0] / 2, node.pos[1] + node.size[1] / 2]);
                const transfer = new DataTransfer();
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                transfer.items.add(new File([bytes], 'same frame.png', {type: 'image/png'}));
                document.elementFromPoint(x, y).dispatchEvent(new DragEvent('drop', {dataTransfer: transfer,
                    clientX: x, clientY: y, bubbles: true, cancelable: true}));
                return node.id;
            }""",
            {"b64": base64.b64encode(buffer.getvalue()).decode()},
        )
    assert upload.value.status == 200, upload.value.text()
    page.wait_for_function(f"() => noodlebox.graph.getNodeById({load}).widgets[0].value === 'same frame.png'")
    assert (server.base_dir / "input" / "same frame.png").is_file()


def test_toolbar_interrupt_and_clear_queue_call_the_api(page: Any) -> None:
    with page.expect_request(lambda r: r.url.endswith("/api/interrupt") and r.method == "POST"):
        page.click("#interrupt-button")
    with page.expect_request(lambda r: r.url.endswith("/api/queue") and r.method == "POST") as request:
        page.click("#clear-queue-button")
    assert json.loads(request.value.post_data) == {"clear": True}
