"""The editor's pure functions, imported as the browser imports them (ES modules from the
server) and called in the page: PNG text chunks, dynamic prompts, seed control, search.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any


def call(page: Any, module: str, expression: str, arg: Any = None) -> Any:
    """Evaluate ``expression`` (a function body using ``m``, the module, and ``arg``) in the page."""
    return page.evaluate(
        f"async (arg) => {{ const m = await import('/js/{module}'); {expression} }}",
        arg,
    )


def test_png_text_chunks_of_every_kind_are_read(page: Any) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    info.add_text("workflow", json.dumps({"nodes": [], "links": [], "note": "é"}), zip=True)  # zTXt
    info.add_itxt("comment", "grüße", zip=True)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG", pnginfo=info)
    chunks = call(
        page,
        "files.js",
        "const bytes = Uint8Array.from(atob(arg), c => c.charCodeAt(0)); return m.pngTextChunks(bytes.buffer);",
        base64.b64encode(buffer.getvalue()).decode(),
    )
    assert json.loads(chunks["prompt"]) == {"1": {"class_type": "X", "inputs": {}}}
    assert json.loads(chunks["workflow"])["note"] == "é"
    assert chunks["comment"] == "grüße"


def test_dynamic_prompts_pick_one_option_and_drop_comments(page: Any) -> None:
    expand = "return arg.map(([text, r]) => m.expandDynamicPrompt(text, () => r));"
    results = call(
        page,
        "prompt.js",
        expand,
        [
            ["a {red|green|blue} fox", 0.0],
            ["a {red|green|blue} fox", 0.99],
            ["{big {red|blue}|small} cat", 0.0],
            ["plain // a comment\ntext /* block */ here", 0.5],
            ["keep \\{this|that\\}", 0.5],
        ],
    )
    assert results == ["a red fox", "a blue fox", "big red cat", "plain \ntext  here", "keep \\{this|that\\}"]


def test_control_after_generate_modes(page: Any) -> None:
    apply = """
        const results = [];
        for (const [mode, value, random] of arg) {
            const widget = {type: "number", value, options: {min: 0, max: 10, step2: 1},
                            controlWidget: {value: mode}};
            m.applyControl(widget, () => random);
            results.push(widget.value);
        }
        return results;"""
    results = call(
        page,
        "widgets.js",
        apply,
        [["fixed", 4, 0], ["increment", 4, 0], ["increment", 10, 0], ["decrement", 0, 0], ["randomize", 4, 0.55]],
    )
    assert results == [4, 5, 10, 0, 5]  # clamped at the ends; randomize = floor(0.55 * 10 / 1) * 1 + 0


def test_search_ranks_exact_names_first(page: Any) -> None:
    defs = [
        {"name": "CLIPTextEncodeSDXL", "display_name": "CLIP Text Encode (SDXL)", "category": "advanced"},
        {"name": "CLIPTextEncode", "display_name": "CLIP Text Encode (Prompt)", "category": "conditioning"},
        {"name": "SaveImage", "display_name": "Save Image", "category": "image", "description": "writes PNG files"},
    ]
    names = call(page, "search.js", "return arg.queries.map(q => m.searchNodes(arg.defs, q).map(d => d.name));",
                 {"defs": defs, "queries": ["CLIPTextEncode", "clip text", "png", "nothing like it"]})
    assert names == [["CLIPTextEncode", "CLIPTextEncodeSDXL"], ["CLIPTextEncode", "CLIPTextEncodeSDXL"],
                     ["SaveImage"], []]
