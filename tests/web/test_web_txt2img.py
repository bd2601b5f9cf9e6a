"""txt2img in the browser with the tiny random-weight SD1.5 checkpoint.

The must-show of issue 6: from an empty canvas, add the seven txt2img nodes by search,
wire them by dragging between socket positions, set the prompt and the steps, queue,
watch the node progress, and find the image drawn in the SaveImage node and on disk;
screenshots of the editor idle, running and done go to ``tests/artifacts/``. Then the
default workflow queued with Ctrl+Enter, and a PNG that ``noodlebox run`` wrote from it
dropped on a fresh editor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from web_editor import ROOT, Editor, Server, require_nodes, workflow_summary

from nodes.default_model import DEFAULT_CHECKPOINT

STEPS = 12
#: The server copies the shipped demo model into its empty checkpoint folder.
TINY_CHECKPOINT = DEFAULT_CHECKPOINT


def next_frame(page: Any) -> None:
    """Let the canvas draw what the last events changed."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_build_txt2img_from_an_empty_canvas_and_run_it(
    page: Any, server: Server, node_types: set[str], artifacts: Path
) -> None:
    require_nodes(node_types)
    editor = Editor(page)
    editor.clear()
    box = editor.canvas_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x, box["y"] + y

    ckpt = editor.add_by_search("CheckpointLoaderSimple", at(20, 330), "CheckpointLoaderSimple")
    positive = editor.add_by_search("CLIPTextEncode", at(260, 60), "CLIPTextEncode")
    negative = editor.add_by_search("CLIPTextEncode", at(260, 260), "CLIPTextEncode")
    latent = editor.add_by_search("EmptyLatentImage", at(260, 470), "EmptyLatentImage")
    sampler = editor.add_by_search("KSampler", at(520, 60), "KSampler")
    decode = editor.add_by_search("VAEDecode", at(790, 60), "VAEDecode")
    save = editor.add_by_search("SaveImage", at(790, 200), "SaveImage")

    editor.connect(ckpt, "MODEL", sampler, "model")
    editor.connect(ckpt, "CLIP", positive, "clip")
    editor.connect(ckpt, "CLIP", negative, "clip")
    editor.connect(positive, "CONDITIONING", sampler, "positive")
    editor.connect(negative, "CONDITIONING", sampler, "negative")
    editor.connect(latent, "LATENT", sampler, "latent_image")
    editor.connect(sampler, "LATENT", decode, "samples")
    editor.connect(ckpt, "VAE", decode, "vae")
    editor.connect(decode, "IMAGE", save, "images")
    assert editor.links() == {
        (ckpt, 0, sampler, 0, "MODEL"),
        (ckpt, 1, positive, 0, "CLIP"),
        (ckpt, 1, negative, 0, "CLIP"),
        (positive, 0, sampler, 1, "CONDITIONING"),
        (negative, 0, sampler, 2, "CONDITIONING"),
        (latent, 0, sampler, 3, "LATENT"),
        (sampler, 0, decode, 0, "LATENT"),
        (ckpt, 2, decode, 1, "VAE"),
        (decode, 0, save, 0, "IMAGE"),
    }

    editor.set_text(positive, "text", "a red fox in the snow, watercolor")
    editor.set_text(negative, "text", "blurry")
    editor.set_number(sampler, "steps", STEPS)
    editor.set_number(latent, "width", 128)
    editor.set_number(latent, "height", 128)
    editor.choose(sampler, "scheduler", "karras")
    prompt = editor.api_prompt()
    assert prompt[str(positive)]["inputs"]["text"] == "a red fox in the snow, watercolor"
    assert prompt[str(sampler)]["inputs"]["steps"] == STEPS
    assert prompt[str(sampler)]["inputs"]["scheduler"] == "karras"
    assert prompt[str(ckpt)]["inputs"]["ckpt_name"] == TINY_CHECKPOINT
    next_frame(page)
    page.screenshot(path=str(artifacts / "editor-idle.png"))

    page.click("#queue-button")
    page.wait_for_function(
        "(id) => noodlebox.view.log.some(e => e.type === 'progress' && String(e.data.node) === String(id))",
        arg=sampler,
        timeout=120_000,
    )
    next_frame(page)
    page.screenshot(path=str(artifacts / "editor-running.png"))

    page.wait_for_function(
        "(id) => noodlebox.graph.getNodeById(id).imageRects?.length > 0 && !noodlebox.view.promptId",
        arg=save,
        timeout=120_000,
    )
    next_frame(page)
    page.screenshot(path=str(artifacts / "editor-done.png"))

    steps_seen = [e["data"] for e in editor.events("progress") if e["data"]["node"] == str(sampler)]
    assert steps_seen[-1]["value"] == steps_seen[-1]["max"] == STEPS
    executed = next(e for e in editor.events("executed") if e["data"]["node"] == str(save))
    image = executed["data"]["output"]["images"][0]
    assert (server.output_dir / image["subfolder"] / image["filename"]).is_file()
    drawn = page.evaluate(f"() => noodlebox.graph.getNodeById({save}).imgs[0].naturalWidth")
    assert drawn == 128


def test_default_workflow_queues_and_a_noodlebox_run_png_loads_back(
    page: Any, browser: Any, server: Server, node_types: set[str], tmp_path: Path
) -> None:
    require_nodes(node_types)
    editor = Editor(page)
    page.click("#default-button")  # the default workflow, with the first checkpoint of the list
    assert editor.widget_value(editor.node_ids("CheckpointLoaderSimple")[0], "ckpt_name") == TINY_CHECKPOINT
    sampler = editor.node_ids("KSampler")[0]
    editor.set_number(sampler, "steps", 2)
    latent = editor.node_ids("EmptyLatentImage")[0]
    editor.set_number(latent, "width", 64)
    editor.set_number(latent, "height", 64)
    saved = editor.workflow()
    seed = editor.widget_value(sampler, "seed")
    page.locator("#graph-canvas").focus()
    page.keyboard.press("Control+Enter")
    page.wait_for_function("() => noodlebox.view.log.some(e => e.type === 'execution_success')", timeout=120_000)
    assert editor.widget_value(sampler, "seed") != seed  # control_after_generate: randomize

    # the saved workflow, run by `noodlebox run` (no server), writes a PNG carrying it
    workflow_file = tmp_path / "workflow.json"
    workflow_file.write_text(json.dumps(saved))
    run = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", str(workflow_file), "--base-dir", str(server.base_dir),
         "-o", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr
    png = Path(run.stdout.split()[0])
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    fresh = context.new_page()
    fresh.goto(server.url + "/")
    fresh.wait_for_selector("body[data-ready=true]")
    other = Editor(fresh)
    other.clear()
    box = other.canvas_box()
    other.drop_file(png.read_bytes(), png.name, "image/png", (box["x"] + 300, box["y"] + 300))
    fresh.wait_for_function("() => noodlebox.graph._nodes.length === 7")
    restored = other.workflow()
    context.close()
    assert workflow_summary(restored) == workflow_summary(saved)
