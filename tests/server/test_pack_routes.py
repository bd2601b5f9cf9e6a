"""Custom node packs on the server: routes added at import, web directories, the load report, pack events."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_kit import collect_until_done

from nodes.api import Services
from nodes.folders import Folders
from nodes.registry import build_registry

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
async def pack_client(make_client, tmp_path: Path):
    registry = build_registry(Services(folders=Folders(tmp_path)), custom_nodes_dirs=[DATA / "packs"])
    return await make_client(registry=registry)


async def test_a_route_added_at_import_is_served(pack_client) -> None:
    for prefix in ("", "/api"):
        resp = await pack_client.get(prefix + "/route_pack/hello?name=x")
        assert resp.status == 200
        assert await resp.json() == {"hello": "x"}


async def test_web_directory_scripts_are_listed_and_served(pack_client) -> None:
    resp = await pack_client.get("/extensions")
    assert await resp.json() == ["/extensions/route_pack/route_pack.js", "/extensions/route_pack/sub/nested.js"]
    resp = await pack_client.get("/extensions/route_pack/route_pack.js")
    assert resp.status == 200 and "route_pack extension" in await resp.text()
    resp = await pack_client.get("/api/extensions/route_pack/sub/nested.js")
    assert resp.status == 200
    assert (await pack_client.get("/extensions/route_pack/..%2F__init__.py")).status == 404
    assert (await pack_client.get("/extensions/route_pack/../__init__.py")).status == 404
    assert (await pack_client.get("/extensions/nopack/x.js")).status == 404


async def test_load_report_lists_packs_and_failures(make_client, tmp_path: Path) -> None:
    registry = build_registry(Services(folders=Folders(tmp_path)), custom_nodes_dirs=[DATA / "custom_nodes"])
    client = await make_client(registry=registry)
    report = await (await client.get("/custom_nodes/load_report")).json()
    assert "example_pack" in report["loaded"]
    failures = {f["name"]: f["error"] for f in report["failures"]}
    assert failures["broken_pack"] == "RuntimeError: this pack is broken on purpose"
    assert (await client.get("/object_info")).status == 200  # the server runs anyway


async def test_send_sync_reaches_the_websocket_client(pack_client) -> None:
    ws = await pack_client.ws_connect("/ws?clientId=c9")
    await ws.receive_json(timeout=5)
    prompt = {"1": {"class_type": "CountWithProgress", "inputs": {"count": 2}}}
    resp = await pack_client.post("/prompt", json={"prompt": prompt, "client_id": "c9"})
    assert resp.status == 200, await resp.text()
    pid = (await resp.json())["prompt_id"]
    messages = await collect_until_done(ws, pid)
    custom = [m for m in messages if isinstance(m, dict) and m["type"] == "progress_pack.done"]
    assert custom == [{"type": "progress_pack.done",
                       "data": {"node": "1", "count": 2, "client_id": "c9", "last_node_id": "1"}}]
    progress = [m["data"]["value"] for m in messages if isinstance(m, dict) and m["type"] == "progress"]
    assert progress == [1, 2]


async def test_v2_userdata_lists_one_level_of_the_user_folder(client, tmp_path: Path) -> None:
    resp = await client.post("/userdata/workflows%2Fa.json", data=b"{}")
    assert resp.status == 200
    top = await (await client.get("/api/v2/userdata")).json()
    assert [e["name"] for e in top if e["type"] == "directory"] == ["workflows"]
    inner = await (await client.get("/api/v2/userdata?path=workflows")).json()
    assert [(e["name"], e["path"], e["type"], e["size"]) for e in inner] == [
        ("a.json", "workflows/a.json", "file", 2)]
    assert (await client.get("/api/v2/userdata?path=nothing")).status == 404
    assert (await client.get("/api/v2/userdata?path=../..")).status in (400, 403)


async def test_internal_logs_have_content(client) -> None:
    import logging

    logging.getLogger("server.test").warning("a line for the log panel")
    text = await (await client.get("/internal/logs")).json()
    assert "a line for the log panel" in text
    raw = await (await client.get("/internal/logs/raw")).json()
    assert any("a line for the log panel" in e["m"] for e in raw["entries"])


async def test_pack_example_workflows_are_templates(pack_client) -> None:
    assert await (await pack_client.get("/api/workflow_templates")).json() == {"route_pack": ["hello_graph"]}
    resp = await pack_client.get("/api/workflow_templates/route_pack/hello_graph.json")
    assert resp.status == 200 and (await resp.json())["nodes"][0]["type"] == "PrimitiveString"
    assert (await pack_client.get("/api/workflow_templates/route_pack/..%2F__init__.py")).status == 404
    assert (await pack_client.get("/api/workflow_templates/v3_pack/x.json")).status == 404


async def test_multi_user_mode_gives_each_user_a_folder(make_client) -> None:
    client = await make_client(multi_user=True)
    assert (await (await client.get("/api/users")).json()) == {"storage": "server", "users": {}}
    alice = await (await client.post("/api/users", json={"username": "Alice B"})).json()
    assert alice.startswith("Alice-B_")
    assert (await client.post("/api/users", json={"username": "Alice B"})).status == 400
    assert (await (await client.get("/api/users")).json())["users"] == {alice: "Alice B"}
    as_alice = {"Comfy-User": alice}
    assert (await client.post("/api/settings/Comfy.Theme", json="dark", headers=as_alice)).status == 200
    assert await (await client.get("/api/settings/Comfy.Theme", headers=as_alice)).json() == "dark"
    assert await (await client.get("/api/settings/Comfy.Theme")).json() is None  # the default user's own
    await client.post("/api/userdata/workflows%2Fmine.json", data=b"{}", headers=as_alice)
    listed = await (await client.get("/api/v2/userdata?path=workflows", headers=as_alice)).json()
    assert [e["name"] for e in listed] == ["mine.json"]
    assert (await client.get("/api/v2/userdata?path=workflows")).status == 404
    assert (await client.get("/api/settings", headers={"Comfy-User": "mallory"})).status == 403


async def test_single_user_mode_refuses_new_users(client) -> None:
    assert (await client.post("/api/users", json={"username": "x"})).status == 400
    assert "migrated" in await (await client.get("/api/users")).json()


async def test_model_preview_is_served_as_webp(client, tmp_path: Path) -> None:
    from PIL import Image

    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    (loras / "style.safetensors").write_bytes(b"x")
    Image.new("RGB", (8, 6), (200, 10, 10)).save(loras / "style.png")
    (loras / "plain.safetensors").write_bytes(b"x")
    resp = await client.get("/api/experiment/models/preview/loras/0/style.safetensors")
    assert resp.status == 200 and resp.content_type == "image/webp"
    import io

    with Image.open(io.BytesIO(await resp.read())) as image:
        assert image.size == (8, 6)
    assert (await client.get("/api/experiment/models/preview/loras/0/plain.safetensors")).status == 404
    assert (await client.get("/api/experiment/models/preview/loras/5/style.safetensors")).status == 404
    assert (await client.get("/api/experiment/models/preview/nothing/0/style.safetensors")).status == 404
    assert (await client.get("/api/experiment/models/preview/loras/0/..%2F..%2Fx.safetensors")).status in (
        400, 403, 404)


async def test_templates_are_served_from_the_templates_package(client, tmp_path: Path, monkeypatch) -> None:
    """The real package is an optional extra (not installed here): a stand-in with its ``iter_assets`` API."""
    import sys
    import types

    from server.routes import frontend

    index = tmp_path / "index.json"
    index.write_text('[{"moduleName": "default", "title": "Basics", "templates": []}]')
    stand_in = types.ModuleType("comfyui_workflow_templates_core")
    stand_in.iter_assets = lambda: iter([("index.json", str(index))])
    monkeypatch.setitem(sys.modules, "comfyui_workflow_templates_core", stand_in)
    monkeypatch.setattr(frontend, "_template_assets", None)
    resp = await client.get("/templates/index.json")
    assert resp.status == 200 and (await resp.json())[0]["title"] == "Basics"
    assert (await client.get("/templates/nothing.json")).status == 404
    monkeypatch.setattr(frontend, "_template_assets", None)


async def test_without_the_templates_package_our_own_templates_are_offered(client) -> None:
    from server.routes import frontend

    if frontend.template_assets():
        pytest.skip("comfyui-workflow-templates is installed here")
    index = await (await client.get("/templates/index.json")).json()
    names = [t["name"] for t in index[0]["templates"]]
    assert names == ["noodlebox_txt2img"]
    graph = await (await client.get("/templates/noodlebox_txt2img.json")).json()
    types = {n["type"] for n in graph["nodes"]}
    assert {"CheckpointLoaderSimple", "KSampler", "SaveImage"} <= types
    info = await (await client.get("/object_info")).json()
    assert types <= set(info)  # every node of the template is one this server has
    assert (await client.get("/templates/other.json")).status == 404
