"""The ``/internal`` sub-application (no ``/api`` mirror): folder paths, file lists, logs."""

from __future__ import annotations

from aiohttp import web

from server.app import json_error, state_of
from server.files import list_top_level

routes = web.RouteTableDef()


@routes.get("/folder_paths")
async def folder_paths(request: web.Request) -> web.Response:
    """``{folder_key: [absolute paths]}``."""
    folders = state_of(request).folders
    return web.json_response(folders.folder_paths() if folders is not None else {})


@routes.get("/files/{directory_type}")
async def files(request: web.Request) -> web.Response:
    """Top-level non-hidden file names of input/output/temp, newest first."""
    kind = request.match_info["directory_type"]
    if kind not in ("input", "output", "temp"):
        raise json_error(400, "Invalid directory type")
    return web.json_response(list_top_level(state_of(request).config.folder_for(kind)))


@routes.get("/logs")
async def logs(request: web.Request) -> web.Response:
    """The server log as one string (the last records kept by ``server.routes.frontend.log_buffer``)."""
    from server.routes.frontend import log_buffer

    return web.json_response(log_buffer().text())


@routes.get("/logs/raw")
async def logs_raw(request: web.Request) -> web.Response:
    """The server log as ``{"t", "m"}`` entries (the last records kept)."""
    from server.routes.frontend import log_buffer

    return web.json_response({"entries": log_buffer().raw(), "size": {"cols": 80, "rows": 24}})
