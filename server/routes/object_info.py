"""``/object_info`` and ``/object_info/{node_class}`` (PROTOCOL 4)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.app import state_of

routes = web.RouteTableDef()


@routes.get("/object_info")
async def get_object_info(request: web.Request) -> web.Response:
    """Every node definition (file lists are read now, off the event loop)."""
    from nodes.object_info import object_info

    registry = state_of(request).registry
    info = await asyncio.get_running_loop().run_in_executor(None, object_info, registry)
    return web.json_response(info)


@routes.get("/object_info/{node_class}")
async def get_node_info(request: web.Request) -> web.Response:
    """``{node_class: definition}``, or ``{}`` if the class is unknown."""
    from nodes.object_info import node_info

    registry = state_of(request).registry
    name = request.match_info["node_class"]
    if name not in registry:
        return web.json_response({})
    info = await asyncio.get_running_loop().run_in_executor(None, node_info, registry[name])
    return web.json_response({name: info})
