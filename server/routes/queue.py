"""``/queue``, ``/interrupt`` and ``/free`` (PROTOCOL 1.2), plus pause/resume.

Pause and resume are an extension: ``POST /queue`` with ``{"pause": true}`` or
``{"resume": true}`` answers ``{"paused": bool}``; the running prompt finishes, pending
ones stay queued (see ``server.queue``).
"""

from __future__ import annotations

from aiohttp import web

from server.app import json_error, read_json, state_of
from server.workers.pool import running_on

routes = web.RouteTableDef()


def _id_list(value: object, key: str) -> list[str]:
    if not isinstance(value, list):
        raise json_error(400, f"{key!r} must be a list of prompt ids")
    return [str(v) for v in value]


@routes.get("/queue")
async def get_queue(request: web.Request) -> web.Response:
    """Running and pending prompts as 5-element arrays (pending in heap order).

    Extension: ``running_on`` maps each running prompt id to the worker running it
    (``local``, or a Ray actor's name such as ``ray-1``).
    """
    state = state_of(request)
    queue = state.queue
    assert queue is not None
    running = [item.as_tuple() for item in queue.running_items()]
    pending = [item.as_tuple() for item in queue.pending()]
    body = {"queue_running": running, "queue_pending": pending}
    if state.worker is not None:
        body["running_on"] = running_on(state.worker.status())
    return web.json_response(body)


@routes.post("/queue")
async def post_queue(request: web.Request) -> web.Response:
    """``{"clear": true}`` and/or ``{"delete": [ids]}``; ``{"pause"|"resume": true}``."""
    state = state_of(request)
    queue = state.queue
    assert queue is not None
    body = await read_json(request)
    if not isinstance(body, dict):
        raise json_error(400, "the body must be a JSON object")
    if body.get("clear"):
        queue.clear()
    if "delete" in body:
        queue.delete(_id_list(body["delete"], "delete"))
    if body.get("pause") or body.get("resume"):
        queue.set_paused(bool(body.get("pause")) and not body.get("resume"))
        return web.json_response({"paused": queue.paused})
    return web.Response()


@routes.post("/interrupt")
async def post_interrupt(request: web.Request) -> web.Response:
    """Interrupt the running prompt; with ``{"prompt_id"}`` only if that one is running."""
    body = await read_json(request, default={}, lenient=True)
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    dispatcher = state_of(request).dispatcher
    assert dispatcher is not None
    dispatcher.interrupt(str(prompt_id) if prompt_id is not None else None)
    return web.Response()


@routes.post("/free")
async def post_free(request: web.Request) -> web.Response:
    """Unload models / free memory after the running prompt (now if idle)."""
    body = await read_json(request, default={})
    if not isinstance(body, dict):
        raise json_error(400, "the body must be a JSON object")
    free_memory = bool(body.get("free_memory", False))
    unload = bool(body.get("unload_models", free_memory))
    dispatcher = state_of(request).dispatcher
    assert dispatcher is not None
    if unload or free_memory:
        dispatcher.request_free(unload, free_memory)
    return web.Response()
