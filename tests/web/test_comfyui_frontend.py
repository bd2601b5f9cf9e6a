"""The official ComfyUI frontend (``serve --frontend comfyui``) against our server.

The frontend is GPL-3.0 and ships as the optional extra ``noodlebox[comfyui-frontend]``
(``make test-comfyui-frontend`` installs it); without it these tests skip. The official
editor is opened as a new user opens it, on a server with no settings saved: its own first
screen (a blank graph under its templates browser, which our server fills with the
demo-model txt2img template) is the starting point. The test clicks that template and the
Run button, as a user would; nothing is injected into the page. The run must end as an image
on disk and a successful ``/history`` entry, with no request leaving the machine.
Screenshots of the first screen and of the finished run go to ``tests/artifacts/``.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_editor import Server, start_server, stop_server, wait_until

needs_frontend = pytest.mark.skipif(
    importlib.util.find_spec("comfyui_frontend_package") is None,
    reason="the official frontend is not installed (pip install -e '.[comfyui-frontend]' or "
    "make test-comfyui-frontend)",
)

#: The card of our demo-model template in the official templates browser (server/routes/frontend.py).
DEMO_TEMPLATE_CARD = "[data-testid='template-workflow-noodlebox_txt2img']"


@pytest.fixture(scope="module")
def comfyui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server serving the official frontend at /."""
    running = start_server(tmp_path_factory.mktemp("noodlebox-comfyui-fe"), "--frontend", "comfyui")
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
def test_a_new_user_runs_the_first_screen_template_from_the_official_frontend(
    browser: Any, comfyui_server: Server, artifacts: Path
) -> None:
    # a new user: no settings saved on the server, an empty browser profile
    assert comfyui_server.get_json("/api/settings").get("Comfy.TutorialCompleted") is not True  # type: ignore[union-attr]
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    official = context.new_page()
    outside: list[str] = []
    official.on(
        "request",
        lambda request: (
            outside.append(request.url) if not request.url.startswith((comfyui_server.url, "data:", "blob:")) else None
        ),
    )
    official.goto(comfyui_server.url + "/")
    # the first screen: the templates browser opens by itself and offers the demo template
    card = official.locator(DEMO_TEMPLATE_CARD)
    card.wait_for(state="visible", timeout=90_000)
    assert official.evaluate("() => window.app.graph.nodes.length") == 0  # a blank graph behind it
    # the card shows what the template draws (workflows/thumbnails/), not a placeholder
    official.wait_for_function(
        "(card) => [...document.querySelectorAll(card + ' img')].some((img) => img.complete && img.naturalWidth > 0)",
        arg=DEMO_TEMPLATE_CARD,
        timeout=10_000,
    )
    official.wait_for_timeout(500)  # let the browser's fade-in end before the screenshot
    official.screenshot(path=str(artifacts / "comfyui-frontend-first-screen.png"))
    card.click()
    official.wait_for_function("() => window.app.graph.nodes.length >= 7", timeout=30_000)
    loaded = official.evaluate("() => window.app.graph.serialize()")
    types = {node["type"] for node in loaded["nodes"]}
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "SaveImage"} <= types
    assert types <= set(comfyui_server.get_json("/api/object_info"))  # type: ignore[arg-type]
    checkpoint = next(n for n in loaded["nodes"] if n["type"] == "CheckpointLoaderSimple")
    assert checkpoint["widgets_values"] == ["noodlebox-demo-shapes.safetensors"]
    official.locator("[data-testid='queue-button']").first.click()
    outputs = Path(comfyui_server.output_dir)
    png = wait_until(lambda: sorted(outputs.glob("*.png")), timeout=180, what="the image the run saves")[0]
    history = wait_until(lambda: comfyui_server.get_json("/api/history"), timeout=30, what="the history entry")
    entry = next(iter(history.values()))  # type: ignore[union-attr]
    assert entry["status"]["status_str"] == "success"
    saved = [image for out in entry["outputs"].values() for image in out.get("images", [])]
    assert [image["filename"] for image in saved] == [png.name]
    # the official editor sent its own conversion of the template, with the workflow for the PNG
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"]["nodes"]
    # the finished run: the editor fetches the saved image to show it on the SaveImage node
    official.wait_for_function(
        "() => performance.getEntriesByType('resource').some((entry) => entry.name.includes('/view?'))",
        timeout=30_000,
    )
    official.wait_for_timeout(1000)
    official.screenshot(path=str(artifacts / "comfyui-frontend-finished-run.png"))
    context.close()
    assert png.stat().st_size > 0
    assert outside == [], f"the official frontend called outside the machine: {outside}"
