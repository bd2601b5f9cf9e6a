"""The aiohttp application factory.

:func:`create_app` builds everything one server needs (store, queue, websocket hub,
worker, dispatcher) and hangs it off the app as one :class:`ServerState`; nothing is
global, so tests build a fresh app per test. Routes live in ``server/routes``, one
module per area; each is served at ``/X`` and ``/api/X`` (PROTOCOL 1.1), except the
jobs routes (``/api/jobs`` only) and ``/internal/...`` (no mirror).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from server.config import ServerConfig
from server.queue import Dispatcher, PromptQueue
from server.store import Store
from server.ws import Hub

log = logging.getLogger(__name__)

#: Where the editor's static files live (``web/`` at the repository root).
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
#: Another static root to serve at ``/`` instead (``serve --frontend comfyui``); absent = WEB_ROOT.
WEB_ROOT_KEY: web.AppKey[Path] = web.AppKey("noodlebox_web_root", Path)

PLACEHOLDER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>noodlebox</title></head>
<body><h1>noodlebox</h1>
<p>The editor is not installed here; the ComfyUI-compatible API is served at
<code>/api/</code> (for example <a href="/api/object_info">/api/object_info</a>).</p>
</body></html>
"""


@dataclass
class ServerState:
    """Everything one running server owns."""

    config: ServerConfig
    registry: Any
    folders: Any
    hub: Hub
    worker: Any = None
    store: Store | None = None
    queue: PromptQueue | None = None
    dispatcher: Dispatcher | None = None
    started_at: float = field(default_factory=time.time)
    recovery_notes: list[str] = field(default_factory=list)

    def server_flags(self) -> dict[str, Any]:
        """The server's feature flags (``/features`` and the websocket reply)."""
        return server_flags(self.config)

    def queue_status(self) -> dict[str, Any]:
        """The ``status`` event's data."""
        remaining = self.queue.remaining if self.queue is not None else 0
        return {"status": {"exec_info": {"queue_remaining": remaining}}}


STATE: web.AppKey[ServerState] = web.AppKey("noodlebox_state", ServerState)


def server_flags(config: ServerConfig) -> dict[str, Any]:
    """Feature flags of PROTOCOL 3.6."""
    return {
        "supports_preview_metadata": True,
        "max_upload_size": float(config.max_upload_bytes),
        "extension": {"manager": {"supports_v4": True}},
    }


def state_of(request: web.Request) -> ServerState:
    """The server state of the app handling ``request`` (sub-apps included)."""
    app = request.config_dict
    return app[STATE]


async def read_json(request: web.Request, default: Any = ..., lenient: bool = False) -> Any:
    """The request's JSON body.

    A missing body gives ``default`` (400 if there is none); a malformed one is a 400
    with a message, or ``default`` when ``lenient`` (ComfyUI's ``/interrupt`` rule).
    """
    body = await request.read()
    if not body.strip():
        if default is not ...:
            return default
        raise json_error(400, "a JSON body is required")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        if lenient and default is not ...:
            return default
        raise json_error(400, f"malformed JSON: {exc}") from None


def json_error(status: int, message: str) -> web.HTTPException:
    """An HTTP error with body ``{"error": message}`` (raise it)."""
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
           409: web.HTTPConflict, 413: web.HTTPRequestEntityTooLarge}.get(status, web.HTTPBadRequest)
    if cls is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=json.dumps({"error": message}),
                                             content_type="application/json")
    return cls(text=json.dumps({"error": message}), content_type="application/json")


def create_app(config: ServerConfig) -> web.Application:
    """A ready-to-run aiohttp application for ``config`` (started by ``web.run_app`` or a test client)."""
    from server.routes import ROUTE_MODULES, frontend, internal, jobs, packs

    config.ensure_dirs()
    folders = _build_folders(config)
    registry = config.registry if config.registry is not None else _build_registry(config, folders)
    state = ServerState(config=config, registry=registry, folders=folders, hub=Hub(server_flags(config)))
    app = web.Application(
        client_max_size=config.max_upload_bytes,
        middlewares=[_errors_middleware, _origin_middleware, _auth_middleware],
    )
    app[STATE] = state
    for module in ROUTE_MODULES:
        add_mirrored(app, module.routes)
    for route in jobs.routes:  # literally /api/jobs...: no unprefixed copy (PROTOCOL 1.1)
        app.router.add_route(route.method, route.path, route.handler)
    internal_app = web.Application()
    internal_app.add_routes(internal.routes)
    app.add_subapp("/internal", internal_app)
    for prefix in ("", "/api"):
        app.router.add_get(prefix + "/ws", _ws_handler)
    packs.add_pack_routes(app, registry)
    packs.attach_events(app)
    frontend.log_buffer()  # /internal/logs shows what was logged from here on
    app.router.add_get("/", _index)
    app.router.add_get("/api/", _index)
    app.router.add_get("/{tail:.+}", _static)
    app.on_startup.append(_start)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bad input is a 4xx with a message; an unexpected failure a JSON 500 without traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except (ConnectionError, TimeoutError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal server error"}, status=500)


def _host_port(value: str) -> tuple[str, int | None]:
    """(host, port) of a Host header or an Origin URL; host lower case, port None if absent."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value if "://" in value else f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:  # a malformed port: compare as an unknown, non-matching host
        return value.lower(), None


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@web.middleware
async def _origin_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """ComfyUI's origin check (PROTOCOL 1.1), or CORS headers when ``--cors`` is given."""
    cors = request.config_dict[STATE].config.cors_origin
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response()
    elif cors is None:
        host, origin = request.headers.get("Host"), request.headers.get("Origin")
        if host and origin:
            (host_name, host_port), (origin_name, origin_port) = _host_port(host), _host_port(origin)
            loopback = host_name in _LOOPBACK or host_name.startswith("127.")
            # ports are compared only when both sides carry one (ComfyUI's rule)
            ports_differ = host_port is not None and origin_port is not None and host_port != origin_port
            if loopback and (host_name != origin_name or ports_differ):
                return web.Response(status=403)
        return await handler(request)
    else:
        response = await handler(request)
    if cors is not None:
        response.headers["Access-Control-Allow-Origin"] = cors
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, DELETE, PUT, OPTIONS, PATCH"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


@web.middleware
async def _auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """With ``--auth-token``: every route but the editor's static files needs the token.

    The token comes as ``Authorization: Bearer T`` or as ``?token=T`` (browsers cannot
    set headers on websockets or ``<img>`` requests).
    """
    import hmac

    token = request.config_dict[STATE].config.auth_token
    if token is None or _is_static(request):
        return await handler(request)
    given = request.query.get("token", "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[len("Bearer ") :].strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise json_error(401, "a valid auth token is required")
    return await handler(request)


def _is_static(request: web.Request) -> bool:
    """The editor's page and files, which carry no data and must load before it can log in."""
    if request.method != "GET":
        return False
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in ("/", "/api/", "/{tail}")


def add_mirrored(app: web.Application, table: web.RouteTableDef) -> None:
    """Add every route of ``table`` at its path and at ``/api`` + path."""
    for route in table:
        assert isinstance(route, web.RouteDef)
        for prefix in ("", "/api"):
            app.router.add_route(route.method, prefix + route.path, route.handler)


def _build_registry(config: ServerConfig, folders: Any) -> Any:
    from nodes.api import Services
    from nodes.registry import build_registry

    services = Services(folders=folders, precision=config.precision, compile=config.compile)
    return build_registry(services, custom_nodes_dirs=config.custom_nodes_dirs)


def _build_folders(config: ServerConfig) -> Any:
    """The model/file folders of ``nodes.folders`` (None until that module exists)."""
    try:
        from nodes.folders import Folders
    except ImportError:
        return None
    folders = Folders(
        config.base_dir,
        input_dir=config.input_dir,
        output_dir=config.output_dir,
        temp_dir=config.temp_dir,
        user_dir=config.user_dir,
        extra_config_paths=config.extra_model_paths,
    )
    default_models = Path(folders.models_dir)
    if config.models_dir is not None and Path(config.models_dir) != default_models:
        # --models DIR: the same sub-folders under DIR, searched first (and saved to first)
        for key in list(folders.keys()):
            for path in reversed(folders.paths(key)):
                if default_models in Path(path).parents:
                    folders.add_path(key, Path(config.models_dir) / Path(path).relative_to(default_models), True)
    return folders


async def _start(app: web.Application) -> None:
    import asyncio

    state = app[STATE]
    _empty_temp(Path(state.config.temp_dir))  # type: ignore[arg-type]
    state.hub.bind(asyncio.get_running_loop())
    state.store = Store(state.config.db_path)  # type: ignore[arg-type]
    state.queue = PromptQueue(state.store, on_change=lambda: state.hub.send("status", state.queue_status()))
    state.recovery_notes = state.queue.recover()
    for note in state.recovery_notes:
        log.warning("recovered prompt %s", note)
    if state.config.worker is not None:
        state.worker = state.config.worker
    else:
        from server.workers.local import LocalWorker

        services = getattr(state.registry, "services", None)  # a NodeRegistry: /free unloads its models
        state.worker = LocalWorker(state.registry, cache=state.config.cache,
                                   free_models=getattr(services, "free_models", None))
    state.dispatcher = Dispatcher(state.queue, state.worker, state.hub, preview_size=state.config.preview_size)

    def greeting(sid: str) -> list[tuple[str, Any]]:
        """A new socket's first messages: status with its sid, and the reconnect hint."""
        messages: list[tuple[str, Any]] = [("status", {**state.queue_status(), "sid": sid})]
        running = state.queue.running if state.queue else None
        node = state.dispatcher.current_node if state.dispatcher else None
        if running is not None and running.client_id == sid and node is not None:
            messages.append(("executing", {"node": node}))
        return messages

    state.hub.on_connect_messages = greeting
    state.dispatcher.start()
    # Everything built so far (imported modules, the node registry) lives as long as the server.
    # Frozen, the cyclic collector stops re-scanning those ~300,000 objects on each full
    # collection: a 5,000-node prompt ran 2x slower and superlinearly without it (FINDINGS).
    # Freezing and unfreezing (at cleanup) are constant time; unfrozen, what was kept from
    # before this app (another app of the same process, e.g. in tests) is collectable again.
    gc.freeze()
    services = getattr(state.registry, "services", None)
    if state.config.preload_runtime and hasattr(services, "start_preload"):

        def preloaded(took: float | None) -> None:
            if took is not None:
                gc.freeze()  # the runtime's modules live as long as the server too
                log.info("model runtime loaded in %.1f s", took)

        services.start_preload(preloaded)  # type: ignore[union-attr]


def _empty_temp(temp_dir: Path) -> None:
    """Remove what earlier runs left in the temp folder (previews), as ComfyUI does at start."""
    import shutil

    if not temp_dir.is_dir():
        return
    for entry in temp_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


async def _shutdown(app: web.Application) -> None:
    state = app[STATE]
    if state.dispatcher is not None:
        await state.dispatcher.stop()
    await state.hub.close()


async def _cleanup(app: web.Application) -> None:
    gc.unfreeze()
    state = app[STATE]
    if state.worker is not None:
        state.worker.close()
    if state.store is not None:
        state.store.close()


async def _ws_handler(request: web.Request) -> web.StreamResponse:
    return await state_of(request).hub.handle(request)


_NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}


async def _index(request: web.Request) -> web.StreamResponse:
    """``GET /``: the editor's index.html, or a small placeholder page."""
    index = request.config_dict.get(WEB_ROOT_KEY, WEB_ROOT) / "index.html"
    if index.is_file():
        return web.FileResponse(index, headers=_NO_CACHE)
    return web.Response(text=PLACEHOLDER_PAGE, content_type="text/html", headers=_NO_CACHE)


async def _static(request: web.Request) -> web.StreamResponse:
    """Files of ``web/`` (the editor), refused if the path leaves it."""
    from server.files import RefusedPathError, resolve_inside

    try:
        path = resolve_inside(request.config_dict.get(WEB_ROOT_KEY, WEB_ROOT), request.match_info["tail"], status=404)
    except RefusedPathError as exc:
        raise json_error(exc.status, str(exc)) from None
    if not path.is_file():
        raise web.HTTPNotFound()
    headers = {"Cache-Control": "no-cache"} if path.suffix in (".js", ".css") else {}
    return web.FileResponse(path, headers=headers)
