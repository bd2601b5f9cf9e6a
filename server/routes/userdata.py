"""Per-user files and settings: ``/userdata``, ``/settings``, ``/users`` (PROTOCOL 1.2, 8.3).

Single-user mode: every request is user ``default``, whose files live in
``<user dir>/default``; settings in ``comfy.settings.json`` there. With ``--multi-user``
the ``Comfy-User`` header names the user (``server.users``), each with its own folder.
Paths are confined to that folder (403 when one leaves it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from server.app import json_error, read_json, state_of
from server.files import RefusedPathError, resolve_inside, walk_files

routes = web.RouteTableDef()

USER = "default"
#: Settings a fresh install answers with (a local server has no update channel).
DEFAULT_SETTINGS: dict[str, Any] = {"Comfy.Notification.ShowVersionUpdates": False}


def _user_root(request: web.Request) -> Path:
    from server.users import request_user

    root = Path(state_of(request).config.user_dir) / request_user(request)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _user_path(request: web.Request, name: str) -> Path:
    """``name`` inside the user's folder (URL-decoded if still encoded), else 403."""
    if "%" in name:
        name = unquote(name)
    if not name:
        raise json_error(400, "a file path is required")
    try:
        return resolve_inside(_user_root(request), name, status=403)
    except RefusedPathError as exc:
        raise json_error(403, str(exc)) from None


def _settings_file(request: web.Request) -> Path:
    return _user_root(request) / "comfy.settings.json"


def _load_settings(request: web.Request) -> dict[str, Any]:
    path = _settings_file(request)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stored = {}
    return {**DEFAULT_SETTINGS, **(stored if isinstance(stored, dict) else {})}


def _save_settings(request: web.Request, settings: dict[str, Any]) -> None:
    path = _settings_file(request)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash never leaves half a settings file


@routes.get("/settings")
async def get_settings(request: web.Request) -> web.Response:
    """All settings of the user."""
    return web.json_response(_load_settings(request))


@routes.get("/settings/{id}")
async def get_setting(request: web.Request) -> web.Response:
    """One setting's value, or null."""
    return web.json_response(_load_settings(request).get(request.match_info["id"]))


@routes.post("/settings")
async def post_settings(request: web.Request) -> web.Response:
    """Merge a JSON object into the settings."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise json_error(400, "settings must be a JSON object")
    _save_settings(request, {**_load_settings(request), **body})
    return web.Response()


@routes.post("/settings/{id}")
async def post_setting(request: web.Request) -> web.Response:
    """Set one setting to any JSON value."""
    value = await read_json(request)
    settings = _load_settings(request)
    settings[request.match_info["id"]] = value
    _save_settings(request, settings)
    return web.Response()


@routes.get("/users")
async def get_users(request: web.Request) -> web.Response:
    """Single-user mode: server storage, migrated once the user folder exists; multi-user: the users."""
    from server.users import load_users

    config = state_of(request).config
    if config.multi_user:
        return web.json_response({"storage": "server", "users": load_users(config)})
    migrated = (Path(config.user_dir) / USER).is_dir()
    return web.json_response({"storage": "server", "migrated": migrated})


@routes.post("/users")
async def post_users(request: web.Request) -> web.Response:
    """Create a user (multi-user mode): ``{"username": name}`` -> its new id."""
    from server.users import create_user

    body = await read_json(request)
    config = state_of(request).config
    if not config.multi_user:
        raise json_error(400, "this server runs in single-user mode")
    name = body.get("username") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise json_error(400, "username is required")
    try:
        return web.json_response(create_user(config, name.strip()))
    except ValueError as exc:
        raise json_error(400, str(exc)) from None


def _file_info(root: Path, path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size, "modified": stat.st_mtime,
            "created": stat.st_ctime}


@routes.get("/userdata")
async def list_userdata(request: web.Request) -> web.Response:
    """Files under ``dir``: paths, ``full_info`` dicts or ``split`` path components."""
    query = request.query
    if not query.get("dir"):
        raise json_error(400, "dir is required")
    folder = _user_path(request, query["dir"])
    if not folder.is_dir():
        raise json_error(404, "directory not found")
    files = walk_files(folder, query.get("recurse") == "true")
    if query.get("full_info") == "true":
        return web.json_response([_file_info(folder, folder / p) for p in files])
    if query.get("split") == "true":
        return web.json_response([[p.as_posix(), *p.parts] for p in files])
    return web.json_response([p.as_posix() for p in files])


@routes.get("/userdata/{file}")
async def get_userdata(request: web.Request) -> web.StreamResponse:
    """The raw file."""
    path = _user_path(request, request.match_info["file"])
    if not path.is_file():
        raise json_error(404, "file not found")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"}
                            if path.suffix not in (".json", ".txt") else None)


def _written(request: web.Request, path: Path) -> web.Response:
    root = _user_root(request)
    if request.query.get("full_info") == "true":
        return web.json_response(_file_info(root, path))
    return web.json_response(path.relative_to(root).as_posix())


@routes.post("/userdata/{file}")
async def post_userdata(request: web.Request) -> web.Response:
    """Write the raw body to the file (``overwrite=false`` refuses an existing one: 409)."""
    path = _user_path(request, request.match_info["file"])
    if path.exists() and request.query.get("overwrite") == "false":
        raise json_error(409, "file exists")
    body = await request.read()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    except OSError as exc:
        raise json_error(400, exc.strerror or str(exc)) from None
    return _written(request, path)


@routes.delete("/userdata/{file}")
async def delete_userdata(request: web.Request) -> web.Response:
    """Delete a file: 204, or 404."""
    path = _user_path(request, request.match_info["file"])
    if not path.is_file():
        raise json_error(404, "file not found")
    path.unlink()
    return web.Response(status=204)


@routes.post("/userdata/{file}/move/{dest}")
async def move_userdata(request: web.Request) -> web.Response:
    """Rename a file within the user's folder."""
    source = _user_path(request, request.match_info["file"])
    dest = _user_path(request, request.match_info["dest"])
    if not source.is_file():
        raise json_error(404, "file not found")
    if dest.exists() and request.query.get("overwrite") == "false":
        raise json_error(409, "destination exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, dest)
    return _written(request, dest)
