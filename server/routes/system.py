"""System and catalogue routes: ``/system_stats``, ``/features``, ``/embeddings``,
``/extensions``, ``/models``, ``/models/{folder}``, ``/experiment/models``, ``/i18n``,
``/workflow_templates``, ``/global_subgraphs``."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from server.app import state_of
from server.workers.pool import worker_rows

routes = web.RouteTableDef()

#: ComfyUI's ``supported_pt_extensions`` (the experiment model listing shows only these).
PT_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

#: The ComfyUI version whose protocol we speak (PROTOCOL section 0).
COMFYUI_VERSION = "0.8.0"


def _memory() -> tuple[int, int]:
    """(total, available) system RAM in bytes, from /proc/meminfo where there is one."""
    try:
        values: dict[str, int] = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
        return values.get("MemTotal", 0), values.get("MemAvailable", values.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        return 0, 0


def _devices() -> list[dict[str, Any]]:
    """The compute devices, without importing torch if nothing has yet (it is slow)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out = []
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            out.append(
                {
                    "name": torch.cuda.get_device_name(index),
                    "type": "cuda",
                    "index": index,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": torch.cuda.memory_reserved(index),
                    "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index),
                }
            )
        return out
    total, free = _memory()
    return [
        {"name": "cpu", "type": "cpu", "index": 0, "vram_total": total, "vram_free": free,
         "torch_vram_total": total, "torch_vram_free": free}
    ]


def _torch_version() -> str:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # not installed: the server still runs pure nodes
        return "unknown"


def _runtime_choices(state: Any) -> dict[str, Any]:
    """The registry's precision and compile choices; only the settings before torch is imported (slow)."""
    services = getattr(state.registry, "services", None)
    if services is None:
        return {}
    if not hasattr(services, "runtime_choices") or not services.runtime_ready():
        return {"precision": {"setting": services.precision}, "compile": {"setting": services.compile},
                "decided": "at the first model load"}
    return dict(services.runtime_choices())


@routes.get("/system_stats")
async def system_stats(request: web.Request) -> web.Response:
    """OS, memory, versions and devices in the shape the frontend's schema requires, plus ``workers``."""
    state = state_of(request)
    total, free = _memory()
    return web.json_response(
        {
            "system": {
                "os": sys.platform,
                "ram_total": total,
                "ram_free": free,
                "comfyui_version": COMFYUI_VERSION,
                "required_frontend_version": "",
                "installed_templates_version": "",
                "required_templates_version": "",
                "python_version": sys.version,
                "pytorch_version": _torch_version(),
                "embedded_python": False,
                "argv": list(sys.argv),
                "machine": platform.machine(),
            },
            "devices": _devices(),
            # extension: the workers that run prompts (a Ray pool lists its actors and their hosts)
            "workers": worker_rows(state.worker.status()) if state.worker is not None else [],
            # extension: what the auto settings picked here and why (once the model runtime is loaded)
            "noodlebox": _runtime_choices(state),
        }
    )


@routes.get("/features")
async def features(request: web.Request) -> web.Response:
    """The server's feature flags (the same as the websocket's ``feature_flags`` reply)."""
    return web.json_response(state_of(request).server_flags())


@routes.get("/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    """Embedding names, relative to ``models/embeddings``, extension removed."""
    folders = state_of(request).folders
    names = folders.filename_list("embeddings") if folders is not None else []
    return web.json_response([os.path.splitext(n)[0] for n in names])


@routes.get("/extensions")
async def extensions(request: web.Request) -> web.Response:
    """Frontend extension scripts: the ``.js`` files of custom node packs' web directories."""
    from server.routes.packs import extension_scripts

    return web.json_response(extension_scripts(state_of(request).registry))


@routes.get("/models")
async def models(request: web.Request) -> web.Response:
    """Every model folder key."""
    folders = state_of(request).folders
    return web.json_response(list(folders.keys()) if folders is not None else [])


@routes.get("/models/{folder}")
async def models_in(request: web.Request) -> web.Response:
    """Files of one folder key; 404 for unknown keys (legacy aliases are not mapped here)."""
    folders = state_of(request).folders
    folder = request.match_info["folder"]
    # keys() and not `in folders`: the legacy aliases clip/unet must 404 here, as in ComfyUI
    if folders is None or folder not in list(folders.keys()):
        raise web.HTTPNotFound()
    return web.json_response([str(PurePosixPath(n)) for n in folders.filename_list(folder)])


@routes.get("/i18n")
async def i18n(request: web.Request) -> web.Response:
    """Translations contributed by custom nodes: none."""
    return web.json_response({})


@routes.get("/workflow_templates")
async def workflow_templates(request: web.Request) -> web.Response:
    """Custom-node workflow templates: ``{pack: [workflow names]}`` from the packs' example folders."""
    from server.routes.packs import pack_workflows

    found = pack_workflows(state_of(request).registry)
    return web.json_response({pack: sorted(names) for pack, names in found.items()})


@routes.get("/global_subgraphs")
async def global_subgraphs(request: web.Request) -> web.Response:
    """Subgraph blueprints from custom nodes: none."""
    return web.json_response({})


@routes.get("/experiment/models")
async def experiment_models(request: web.Request) -> web.Response:
    """Model folder keys with their directories (the frontend's model library)."""
    folders = state_of(request).folders
    if folders is None:
        return web.json_response([])
    keys = [k for k in list(folders.keys()) if k not in ("configs", "custom_nodes")]
    return web.json_response([{"name": k, "folders": [str(p) for p in folders.paths(k)]} for k in keys])


@routes.get("/experiment/models/{folder}")
async def experiment_models_in(request: web.Request) -> web.Response:
    """Files of one folder key with their directory index, times and size; 404 if unknown."""
    folders = state_of(request).folders
    folder = request.match_info["folder"]
    if folders is None or folder not in list(folders.keys()):
        raise web.HTTPNotFound()
    found: dict[str, dict[str, Any]] = {}
    for index, directory in enumerate(folders.paths(folder)):
        root = Path(directory)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in PT_EXTENSIONS:
                continue
            name = path.relative_to(root).as_posix()
            if name not in found:
                stat = path.stat()
                found[name] = {"name": name, "pathIndex": index, "modified": stat.st_mtime,
                               "created": stat.st_ctime, "size": stat.st_size}
    return web.json_response(list(found.values()))
