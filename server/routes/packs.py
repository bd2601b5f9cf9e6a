"""Custom node packs on the server: their web directories, their routes, their load report, their events.

- ``/extensions`` lists the ``.js`` files of every pack's ``WEB_DIRECTORY`` as
  ``/extensions/<pack>/<path>`` (what the editor loads), served by
  ``/extensions/{pack}/{path}`` from inside that directory only.
- ``/custom_nodes/load_report`` (next to ``/object_info``): the packs that loaded and
  each failure with its reason (raised at import, timed out, wrote outside its folder,
  missing package...).
- :func:`add_pack_routes` serves the routes packs added via ``PromptServer.instance.routes``
  (at their path and under ``/api``); :func:`attach_events` makes ``send_sync`` reach
  this server's websocket clients.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from server.app import json_error, state_of

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def web_dirs(registry: Any) -> dict[str, Path]:
    """Pack name -> its web directory (empty for a registry without packs)."""
    return dict(getattr(registry, "web_dirs", None) or {})


def extension_scripts(registry: Any) -> list[str]:
    """The URLs of every pack's frontend scripts, sorted per pack."""
    urls = []
    for pack, folder in web_dirs(registry).items():
        for script in sorted(folder.rglob("*.js")):
            urls.append(f"/extensions/{pack}/{script.relative_to(folder).as_posix()}")
    return urls


@routes.get("/extensions/{pack}/{path:.+}")
async def extension_file(request: web.Request) -> web.StreamResponse:
    """A file of a pack's web directory (never outside it)."""
    folder = web_dirs(state_of(request).registry).get(request.match_info["pack"])
    if folder is None:
        raise json_error(404, "no such extension")
    target = (folder / request.match_info["path"]).resolve()
    if folder not in target.parents or not target.is_file():
        raise json_error(404, "no such file")
    return web.FileResponse(target)


#: Folder names ComfyUI reads a pack's example workflows from.
EXAMPLE_FOLDERS = ("example_workflows", "workflow", "workflows", "example", "examples")


def pack_workflows(registry: Any) -> dict[str, dict[str, Path]]:
    """Pack -> {workflow name: file} of the first example folder each package pack has."""
    found: dict[str, dict[str, Path]] = {}
    for pack, folder in (getattr(registry, "pack_dirs", None) or {}).items():
        for name in EXAMPLE_FOLDERS:
            examples = folder / name
            if examples.is_dir():
                files = {p.stem: p for p in sorted(examples.glob("*.json"))}
                if files:
                    found[pack] = files
                break
    return found


@routes.get("/workflow_templates/{pack}/{file}")
async def pack_workflow(request: web.Request) -> web.StreamResponse:
    """One example workflow (or its thumbnail) of a pack."""
    files = pack_workflows(state_of(request).registry).get(request.match_info["pack"])
    name = request.match_info["file"]
    if files is None or "/" in name or "\\" in name or name.startswith("."):
        raise json_error(404, "no such workflow template")
    target = next(iter(files.values())).parent / name
    if not target.is_file():
        raise json_error(404, "no such workflow template")
    return web.FileResponse(target)


@routes.get("/custom_nodes/load_report")
async def load_report(request: web.Request) -> web.Response:
    """The custom node packs that loaded, and every failure with its reason."""
    registry = state_of(request).registry
    failures = [{"name": f.name, "path": f.path, "error": f.error} for f in getattr(registry, "load_report", [])]
    return web.json_response({"loaded": list(getattr(registry, "custom_packs", [])), "failures": failures,
                              "web_directories": {k: str(v) for k, v in web_dirs(registry).items()}})


def add_pack_routes(app: web.Application, registry: Any) -> None:
    """Serve the routes packs added with ``PromptServer.instance.routes`` (path and ``/api`` + path)."""
    for route in getattr(registry, "pack_routes", None) or []:
        if not isinstance(route, web.RouteDef):
            log.warning("custom node route %r ignored: only plain routes are served", route)
            continue
        for prefix in ("", "/api"):
            try:
                app.router.add_route(route.method, prefix + route.path, route.handler, **route.kwargs)
            except (RuntimeError, ValueError) as exc:
                log.warning("custom node route %s %s ignored: %s", route.method, route.path, exc)


def attach_events(app: web.Application) -> None:
    """While ``app`` runs, pack events (``PromptServer.instance.send_sync``) go to its websocket clients.

    Call before the app starts: it adds a startup hook that attaches and a cleanup hook
    that detaches (so a stopped server never receives events).
    """
    from nodes.comfy_surface import runtime

    def sink(event: Any, data: Any, sid: str | None) -> None:
        if isinstance(event, str):
            try:
                app_state(app).hub.send_threadsafe(event, data, sid)
            except (RuntimeError, AssertionError) as exc:  # not started yet, or stopped (loop closed)
                log.debug("pack event %s not sent: %s", event, exc)
        else:
            log.debug("binary pack event %r not forwarded", event)

    async def attach(app: web.Application) -> None:
        runtime.server_sink = sink

    async def detach(app: web.Application) -> None:
        if runtime.server_sink is sink:
            runtime.server_sink = None

    app.on_startup.append(attach)
    app.on_cleanup.append(detach)


def app_state(app: web.Application) -> Any:
    """The app's server state."""
    from server.app import STATE

    return app[STATE]
