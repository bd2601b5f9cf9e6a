"""Origin check, CORS, auth token, and the small system, settings and userdata routes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest


async def test_foreign_origin_on_loopback_is_403(client) -> None:
    port = client.server.port
    bad = await client.post("/prompt", json={}, headers={"Origin": "http://evil.example"})
    assert bad.status == 403
    same = await client.get("/queue", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.status == 200
    other_port = await client.get("/queue", headers={"Origin": f"http://127.0.0.1:{port + 1}"})
    assert other_port.status == 403
    no_port = await client.get("/queue", headers={"Origin": "http://127.0.0.1"})
    assert no_port.status == 200
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    no_origin = await client.get("/queue")
    assert no_origin.status == 200
    options = await client.options("/prompt", headers={"Origin": "http://evil.example"})
    assert options.status == 200


async def test_cors_mode_adds_headers(make_client) -> None:
    client = await make_client(cors_origin="*")
    resp = await client.get("/queue", headers={"Origin": "http://elsewhere.example"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]


async def test_auth_token(make_client) -> None:
    client = await make_client(auth_token="s3cret")
    assert (await client.get("/queue")).status == 401
    assert (await client.get("/queue", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/queue", headers={"Authorization": "Bearer s3cret"})).status == 200
    assert (await client.get("/api/queue?token=s3cret")).status == 200
    assert (await client.get("/internal/folder_paths")).status == 401
    assert (await client.get("/")).status == 200  # the editor page loads before logging in
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 401
    ws = await client.ws_connect("/ws?token=s3cret&clientId=t")
    assert (await ws.receive_json(timeout=5))["data"]["sid"] == "t"


async def test_index_and_static(client) -> None:
    for path in ("/", "/api/"):
        resp = await client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-cache"
    assert (await client.get("/no/such/file.js")).status == 404


async def test_system_stats_and_catalogues(client, tmp_path: Path) -> None:
    stats = await (await client.get("/api/system_stats")).json()
    for key in ("os", "python_version", "embedded_python", "comfyui_version", "pytorch_version", "argv",
                "ram_total", "ram_free"):
        assert key in stats["system"]
    for key in ("name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"):
        assert key in stats["devices"][0]
    choices = stats["noodlebox"]  # extension: the precision and compile settings, and what auto picked
    assert choices["precision"]["setting"] == "auto" and choices["compile"]["setting"] == "off"
    assert await (await client.get("/extensions")).json() == []
    assert await (await client.get("/i18n")).json() == {}
    (tmp_path / "models" / "embeddings").mkdir(parents=True)
    (tmp_path / "models" / "embeddings" / "style.safetensors").write_bytes(b"")
    assert await (await client.get("/embeddings")).json() == ["style"]
    keys = await (await client.get("/models")).json()
    assert "checkpoints" in keys and "clip" not in keys
    assert await (await client.get("/models/embeddings")).json() == ["style.safetensors"]
    assert (await client.get("/models/clip")).status == 404  # legacy aliases are not mapped here
    paths = await (await client.get("/internal/folder_paths")).json()
    assert paths["checkpoints"][0] == str(tmp_path / "models" / "checkpoints")
    assert (await client.get("/api/internal/folder_paths")).status == 404  # no /api mirror for /internal


async def test_object_info(client) -> None:
    info = await (await client.get("/object_info")).json()
    assert {"PrimitiveInt", "StringConcatenate", "PreviewAny", "NoodleSleep"} <= set(info)
    one = await (await client.get("/api/object_info/NoodleSleep")).json()
    assert one["NoodleSleep"]["output_node"] is True
    assert await (await client.get("/object_info/Nope")).json() == {}


async def test_settings(client) -> None:
    settings = await (await client.get("/settings")).json()
    assert settings["Comfy.Notification.ShowVersionUpdates"] is False
    assert (await client.post("/settings", json={"Comfy.A": 1})).status == 200
    assert (await client.post("/api/settings/Comfy.B", json={"x": [1]})).status == 200
    settings = await (await client.get("/settings")).json()
    assert settings["Comfy.A"] == 1 and settings["Comfy.B"] == {"x": [1]}
    assert await (await client.get("/settings/Comfy.B")).json() == {"x": [1]}
    assert await (await client.get("/settings/Unset")).json() is None


async def test_userdata_round_trip(client) -> None:
    resp = await client.post("/userdata/workflows%2Fa.json", data=b'{"n": 1}')
    assert resp.status == 200 and await resp.json() == "workflows/a.json"
    assert (await client.post("/userdata/workflows%2Fa.json?overwrite=false", data=b"{}")).status == 409
    assert await (await client.get("/userdata/workflows%2Fa.json")).read() == b'{"n": 1}'
    listed = await (await client.get("/userdata?dir=workflows")).json()
    assert listed == ["a.json"]
    full = await (await client.get("/userdata?dir=workflows&full_info=true")).json()
    assert full[0]["path"] == "a.json" and full[0]["size"] == 8
    moved = await client.post("/userdata/workflows%2Fa.json/move/workflows%2Fb.json?full_info=true")
    assert (await moved.json())["path"] == "workflows/b.json"
    assert (await client.get("/userdata?dir=workflows&split=true")).status == 200
    assert (await client.delete("/userdata/workflows%2Fb.json")).status == 204
    assert (await client.delete("/userdata/workflows%2Fb.json")).status == 404
    assert (await client.get("/userdata?dir=nothing")).status == 404
    users = await (await client.get("/users")).json()
    assert users == {"storage": "server", "migrated": True}


async def test_models_option_is_searched_first(make_client, tmp_path: Path) -> None:
    models = tmp_path / "elsewhere"
    (models / "checkpoints").mkdir(parents=True)
    (models / "checkpoints" / "tiny.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    client = await make_client(models_dir=models)
    paths = await (await client.get("/internal/folder_paths")).json()
    assert paths["checkpoints"][0] == str(models / "checkpoints")
    assert await (await client.get("/models/checkpoints")).json() == ["tiny.safetensors"]
    listing = await (await client.get("/api/experiment/models/checkpoints")).json()
    assert listing[0]["name"] == "tiny.safetensors" and listing[0]["pathIndex"] == 0
    names = [entry["name"] for entry in await (await client.get("/experiment/models")).json()]
    assert "checkpoints" in names and "configs" not in names
    # no __metadata__ in that header: 404, as every view_metadata failure
    resp = await client.get("/view_metadata/checkpoints", params={"filename": "tiny.safetensors"})
    assert resp.status == 404
