"""The official ComfyUI frontend (``serve --frontend comfyui``) against our server.

The frontend is GPL-3.0 and ships as the optional extra ``noodlebox[comfyui-frontend]``
(``make test-comfyui-frontend`` installs it); without it these tests skip. The workflow
our editor saves (its default txt2img graph) is loaded into the official editor, queued
with its Run button, and must come out as an image on disk, with no request leaving the
machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_editor import Editor, Server, require_nodes, start_server, stop_server, wait_until

needs_frontend = pytest.mark.skipif(
    importlib.util.find_spec("comfyui_frontend_package") is None,
    reason="the official frontend is not installed (pip install -e '.[comfyui-frontend]' or "
    "make test-comfyui-frontend)",
)

#: A returning user's settings: no first-start templates browser over the canvas.
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True}


@pytest.fixture(scope="module")
def comfyui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server serving the official frontend at /."""
    running = start_server(tmp_path_factory.mktemp("noodlebox-comfyui-fe"), "--frontend", "comfyui")
    request = urllib.request.Request(
        running.url + "/api/settings", data=json.dumps(FRONTEND_SETTINGS).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()
    try:
        yield running
    finally:
        stop_server(running)


def test_frontend_choice_and_the_message_when_the_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.cli import UserError
    from server.commands.serve import frontend_root

    assert frontend_root("noodlebox") is None  # our editor, web/
    monkeypatch.setitem(sys.modules, "comfyui_frontend_package", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'noodlebox\[comfyui-frontend\]'"):
        frontend_root("comfyui")


@needs_frontend
def test_serves_the_official_frontend_and_its_settings_make_no_outside_call(comfyui_server: Server) -> None:
    with urllib.request.urlopen(comfyui_server.url + "/", timeout=10) as response:
        page = response.read().decode()
    assert "<html" in page.lower() and "noodlebox" not in page  # the official editor, not ours
    settings = comfyui_server.get_json("/api/settings")
    assert settings["Comfy.Notification.ShowVersionUpdates"] is False  # type: ignore[index]


@needs_frontend
def test_our_default_workflow_runs_from_the_official_frontend(
    page: Any, browser: Any, comfyui_server: Server, node_types: set[str]
) -> None:
    require_nodes(node_types)
    # our editor (the session server) saves its default workflow, made small and quick
    ours = Editor(page)
    page.click("#default-button")
    sampler = ours.node_ids("KSampler")[0]
    ours.set_number(sampler, "steps", 2)
    latent = ours.node_ids("EmptyLatentImage")[0]
    ours.set_number(latent, "width", 64)
    ours.set_number(latent, "height", 64)
    workflow = ours.workflow()

    context = browser.new_context(viewport={"width": 1600, "height": 900})
    official = context.new_page()
    outside: list[str] = []
    official.on(
        "request",
        lambda request: outside.append(request.url)
        if not request.url.startswith((comfyui_server.url, "data:", "blob:"))
        else None,
    )
    official.goto(comfyui_server.url + "/")
    official.wait_for_function("() => window.app?.graph && window.app?.api", timeout=60_000)
    official.wait_for_timeout(500)
    overlay = official.locator("[data-testid='dialog-overlay']")
    for _ in range(5):  # the first-start dialogs (templates browser) close with Escape
        if not overlay.count():
            break
        official.keyboard.press("Escape")
        official.wait_for_timeout(300)
    # The frontend's own first-start graph (a Z-Image workflow with model download hints)
    # makes it ask the model host about those files; that is the frontend's, not ours. From
    # here on, with our workflow, nothing may leave the machine.
    official.wait_for_timeout(1000)
    outside.clear()
    official.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
    loaded = official.evaluate("() => window.app.graph.serialize()")
    assert sorted(n["type"] for n in loaded["nodes"]) == sorted(n["type"] for n in workflow["nodes"])
    official.locator("[data-testid='queue-button']").first.click()
    outputs = Path(comfyui_server.output_dir)
    png = wait_until(lambda: sorted(outputs.glob("*.png")), timeout=120, what="the image the run saves")[0]
    history = wait_until(lambda: comfyui_server.get_json("/api/history"), what="the history entry")
    entry = next(iter(history.values()))  # type: ignore[union-attr]
    assert entry["status"]["status_str"] == "success"
    # the official editor sent its own conversion, with the workflow for the PNG
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"]
    context.close()
    assert png.stat().st_size > 0
    assert outside == [], f"the official frontend called outside the machine: {outside}"
