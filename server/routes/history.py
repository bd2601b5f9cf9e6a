"""``/history`` (PROTOCOL 1.2 and 5.7): finished prompts, oldest first."""

from __future__ import annotations

from aiohttp import web

from server.app import json_error, read_json, state_of

routes = web.RouteTableDef()


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise json_error(400, f"{name} must be an integer") from None


@routes.get("/history")
async def get_history(request: web.Request) -> web.Response:
    """Entries in insertion order; ``max_items`` alone = the last N, with ``offset`` = a page."""
    store = state_of(request).store
    assert store is not None
    entries = store.history(_int_param(request, "max_items"), _int_param(request, "offset"))
    return web.json_response(entries)


@routes.get("/history/{prompt_id}")
async def get_history_entry(request: web.Request) -> web.Response:
    """``{prompt_id: entry}``, or ``{}`` (still 200) if unknown."""
    store = state_of(request).store
    assert store is not None
    prompt_id = request.match_info["prompt_id"]
    entry = store.history_entry(prompt_id)
    return web.json_response({prompt_id: entry} if entry is not None else {})


@routes.post("/history")
async def post_history(request: web.Request) -> web.Response:
    """``{"clear": true}`` and/or ``{"delete": [ids]}``."""
    store = state_of(request).store
    assert store is not None
    body = await read_json(request)
    if not isinstance(body, dict):
        raise json_error(400, "the body must be a JSON object")
    if body.get("clear"):
        store.clear_history()
    if "delete" in body:
        ids = body["delete"]
        if not isinstance(ids, list):
            raise json_error(400, "'delete' must be a list of prompt ids")
        store.delete_history(str(i) for i in ids)
    return web.Response()
