"""Uploads, ``/view`` and the path checks: every escape attempt and malformed request is a 4xx."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import aiohttp
import pytest
from PIL import Image


def png_bytes(color: tuple[int, int, int, int] = (10, 20, 30, 128), size: int = 8) -> bytes:
    """A small RGBA PNG."""
    out = io.BytesIO()
    Image.new("RGBA", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def raw_form(filename: str) -> dict:
    """Request kwargs of a multipart upload whose file name is sent unescaped, as browsers do."""
    body = (
        b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + filename.encode()
        + b"\"\r\nContent-Type: image/png\r\n\r\n" + png_bytes() + b"\r\n--XyZ--\r\n"
    )
    return {"data": body, "headers": {"Content-Type": "multipart/form-data; boundary=XyZ"}}


def form(data: bytes, filename: str = "pic.png", **fields: str) -> aiohttp.FormData:
    """A multipart upload form."""
    fd = aiohttp.FormData()
    fd.add_field("image", data, filename=filename, content_type="image/png")
    for key, value in fields.items():
        fd.add_field(key, value)
    return fd


async def test_upload_view_and_dedupe(client, tmp_path: Path) -> None:
    first = await (await client.post("/upload/image", data=form(png_bytes()))).json()
    assert first == {"name": "pic.png", "subfolder": "", "type": "input"}
    same = await (await client.post("/api/upload/image", data=form(png_bytes()))).json()
    assert same["name"] == "pic.png"  # identical bytes: reused, not renamed
    other = await (await client.post("/upload/image", data=form(png_bytes((1, 2, 3, 255))))).json()
    assert other["name"] == "pic (1).png"
    forced = await (await client.post("/upload/image", data=form(png_bytes((9, 9, 9, 9)), overwrite="true"))).json()
    assert forced["name"] == "pic.png"
    sub = await (await client.post("/upload/image", data=form(png_bytes(), subfolder="a/b", type="temp"))).json()
    assert sub == {"name": "pic.png", "subfolder": "a/b", "type": "temp"}
    assert (tmp_path / "temp" / "a" / "b" / "pic.png").is_file()

    resp = await client.get("/view", params={"filename": "pic.png", "type": "input"})
    assert resp.status == 200 and resp.content_type == "image/png"
    assert 'filename="pic.png"' in resp.headers["Content-Disposition"]
    assert Image.open(io.BytesIO(await resp.read())).getpixel((0, 0)) == (9, 9, 9, 9)
    resp = await client.get("/view", params={"filename": "pic.png [temp]", "subfolder": "a/b"})
    assert resp.status == 200
    resp = await client.get("/view", params={"filename": "pic.png", "type": "input", "preview": "jpeg;80"})
    assert resp.content_type == "image/jpeg"
    resp = await client.get("/view", params={"filename": "pic.png", "type": "input", "channel": "a"})
    alpha_view = Image.open(io.BytesIO(await resp.read()))
    assert alpha_view.mode == "RGBA" and alpha_view.getpixel((0, 0)) == (0, 0, 0, 9)
    listing = await (await client.get("/internal/files/input")).json()
    assert set(listing) == {"pic.png", "pic (1).png"}


async def test_upload_mask_takes_alpha_from_the_upload(client, tmp_path: Path) -> None:
    (tmp_path / "output").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "output" / "orig.png")
    mask = png_bytes((0, 0, 0, 77))
    ref = json.dumps({"filename": "orig.png", "type": "output"})
    body = await (await client.post("/upload/mask", data=form(mask, "mask.png", original_ref=ref))).json()
    assert body == {"name": "mask.png", "subfolder": "", "type": "input"}
    merged = Image.open(tmp_path / "input" / "mask.png")
    assert merged.getpixel((3, 3)) == (255, 0, 0, 77)


@pytest.mark.parametrize("name", ["page.html", "x.js", "y.css", "z.svg", "w.xhtml"])
async def test_view_never_serves_active_content(client, tmp_path: Path, name: str) -> None:
    (tmp_path / "output").mkdir(exist_ok=True)
    (tmp_path / "output" / name).write_text("<script>alert(1)</script>")
    resp = await client.get("/view", params={"filename": name})
    assert resp.status == 200
    assert resp.content_type == "application/octet-stream"


async def test_upload_size_cap_is_413(make_client) -> None:
    client = await make_client(max_upload_mb=0.01)
    resp = await client.post("/upload/image", data=form(os.urandom(50_000)))
    assert resp.status == 413
    resp = await client.post("/prompt", data=b"x" * 50_000, headers={"Content-Type": "application/json"})
    assert resp.status == 413


async def test_symlink_out_of_a_folder_is_refused(client, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.png").write_bytes(png_bytes())
    (tmp_path / "output").mkdir(exist_ok=True)
    os.symlink(outside, tmp_path / "output" / "link")
    os.symlink(outside / "key.png", tmp_path / "output" / "direct.png")
    assert (await client.get("/view", params={"filename": "key.png", "subfolder": "link"})).status == 403
    assert (await client.get("/view", params={"filename": "direct.png"})).status == 403


# (method, path, request kwargs): each must be answered 4xx, never 2xx or 5xx.
BAD_REQUESTS = [
    ("GET", "/view", {"params": {"filename": "../user/noodlebox.db"}}),
    ("GET", "/view", {"params": {"filename": "..%2F..%2Fetc%2Fpasswd"}}),
    ("GET", "/view", {"params": {"filename": "/etc/passwd"}}),
    ("GET", "/view", {"params": {"filename": "a\x00b.png"}}),
    ("GET", "/view", {"params": {"filename": "x.png", "subfolder": "../.."}}),
    ("GET", "/view", {"params": {"filename": "x.png", "subfolder": "/etc"}}),
    ("GET", "/view", {"params": {"filename": "x.png", "subfolder": "a/../../.."}}),
    ("GET", "/view", {"params": {"filename": "x.png", "type": "user"}}),
    ("GET", "/view", {"params": {"filename": ""}}),
    ("GET", "/view", {"params": {"filename": "..\\..\\x.png"}}),
    ("GET", "/view", {"params": {"filename": "C:\\windows\\x.png"}}),
    ("GET", "/view", {}),
    ("GET", "/api/view", {"params": {"filename": "x.png [output]", "subfolder": "../../"}}),
    ("POST", "/upload/image", raw_form("../evil.png")),
    ("POST", "/upload/image", raw_form("sub/evil.png")),
    ("POST", "/upload/image", raw_form("/etc/evil.png")),
    ("POST", "/upload/image", raw_form("")),
    ("POST", "/upload/image", {"data": form(png_bytes(), subfolder="../../x")}),
    ("POST", "/upload/image", {"data": form(png_bytes(), subfolder="/tmp")}),
    ("POST", "/upload/image", {"data": form(png_bytes(), type="user")}),
    ("POST", "/upload/image", {"data": b"not multipart"}),
    ("POST", "/upload/mask", {"data": form(png_bytes(), original_ref="{bad json")}),
    ("POST", "/upload/mask", {"data": form(png_bytes(), original_ref='{"filename": "../../x.png"}')}),
    ("GET", "/userdata/..%2F..%2Fnoodlebox.db", {}),
    ("GET", "/userdata/%2e%2e%2fnoodlebox.db", {}),
    ("GET", "/userdata", {"params": {"dir": "../"}}),
    ("GET", "/userdata", {}),
    ("POST", "/userdata/..%2Fescape.json", {"data": b"{}"}),
    ("POST", "/userdata/a.json/move/..%2F..%2Fb.json", {}),
    ("DELETE", "/userdata/..%2Fnoodlebox.db", {}),
    ("GET", "/internal/files/user", {}),
    ("GET", "/view_metadata/checkpoints", {"params": {"filename": "../../x.safetensors"}}),
    ("GET", "/models/../user", {}),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", {}),
    ("POST", "/queue", {"data": b"{oops"}),
    ("POST", "/history", {"data": b"[1,"}),
    ("POST", "/history", {"json": {"delete": "not-a-list"}}),
    ("POST", "/settings", {"data": b"{"}),
    ("POST", "/settings", {"json": [1, 2]}),
    ("POST", "/settings/Comfy.X", {"data": b"nope"}),
    ("POST", "/free", {"data": b"{free"}),
    ("POST", "/prompt", {"data": b"\xff\xfe"}),
    ("GET", "/history", {"params": {"offset": "abc"}}),
    ("GET", "/api/jobs", {"params": {"limit": "-1"}}),
    ("PUT", "/prompt", {"json": {}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), BAD_REQUESTS, ids=[f"{m} {p}" for m, p, _ in BAD_REQUESTS])
async def test_bad_request_is_4xx(client, method: str, path: str, kwargs: dict) -> None:
    resp = await client.request(method, path, **kwargs)
    assert 400 <= resp.status < 500, (resp.status, await resp.text())
