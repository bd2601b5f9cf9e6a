"""``noodlebox serve``: the editor and the ComfyUI-compatible API on one port.

Stops gracefully on SIGTERM and SIGINT: the running prompt is interrupted and put
back in the queue (it runs again at the next start), sockets are closed, and the
database is checkpointed and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from server.cli import UserError
from server.config import WORKER_KINDS, ServerConfig, check_cache_policy

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("off", "on", "auto")  # diffusion.unet_patches.compute.COMPILE_MODES (server imports no torch)
FRONTENDS = ("noodlebox", "comfyui")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser("serve", help="serve the editor and the ComfyUI-compatible API")
    p.add_argument("--listen", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8188, help="port (default 8188; 0 picks a free one)")
    p.add_argument("--base-dir", type=Path, default=Path.cwd(),
                   help="folder holding models/, input/, output/, temp/, user/ (default: the current folder)")
    p.add_argument("--models", type=Path, default=None, help="models folder (default BASE/models)")
    p.add_argument("--output", type=Path, default=None, help="output folder (default BASE/output)")
    p.add_argument("--input", type=Path, default=None, help="input folder (default BASE/input)")
    p.add_argument("--cache", default="classic", help="result cache: classic, lru:N, ram:GB or none")
    p.add_argument("--auth-token", default=None,
                   help="require this token (Authorization: Bearer T, or ?token=T) on every API request")
    p.add_argument("--cors", default=None, metavar="ORIGIN",
                   help="send CORS headers for ORIGIN (e.g. '*') instead of the same-origin check")
    p.add_argument("--max-upload-size", type=float, default=100.0, metavar="MB", help="request body limit in MB")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="model weights precision")
    p.add_argument("--compile", choices=COMPILE_MODES, default="off",
                   help="torch.compile UNets and VAE decoders: off (default), on, or auto (only where it wins: "
                        "CUDA); compiled kernels are cached on disk under user/cache")
    p.add_argument("--preview-size", type=int, default=512, help="largest side of live previews in pixels")
    p.add_argument("--custom-nodes", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of ComfyUI custom node packs (repeatable)")
    p.add_argument("--extra-model-paths-config", type=Path, action="append", default=[], metavar="YAML",
                   help="an extra_model_paths.yaml (repeatable)")
    p.add_argument("--workers", choices=WORKER_KINDS, default="local",
                   help="run prompts in this process (local, the default) or on a pool of Ray actors (ray)")
    p.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="with --workers ray: join this Ray cluster (default: start Ray on this machine)")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="with --workers ray: number of actors (default: one per GPU of the cluster, or 1)")
    p.add_argument("--frontend", choices=FRONTENDS, default="noodlebox",
                   help="the web editor served at / (comfyui: the official ComfyUI frontend, GPL-3.0, "
                        "from the optional extra noodlebox[comfyui-frontend])")
    p.add_argument("--no-default-model", action="store_true",
                   help="do not copy the demo model in as the default checkpoint when the checkpoint folder is empty")
    p.add_argument("--multi-user", action="store_true",
                   help="users by the Comfy-User header, each with its own settings and files")
    p.add_argument("--verbose", action="store_true", help="log at INFO level")
    p.set_defaults(func=_serve)


def frontend_root(name: str) -> Path | None:
    """The static folder of ``--frontend NAME`` (None: our own editor in ``web/``).

    ``comfyui`` is the ``comfyui-frontend-package`` pip package's ``static`` folder; it is
    GPL-3.0, so it is an optional extra and never the default. Missing, it is a UserError.
    """
    if name == "noodlebox":
        return None
    try:
        import comfyui_frontend_package
    except ImportError:
        raise UserError("--frontend comfyui needs the official frontend: "
                        "pip install 'noodlebox[comfyui-frontend]'") from None
    root = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
    if not (root / "index.html").is_file():
        raise UserError(f"--frontend comfyui: no index.html in {root}")
    return root


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` of parsed arguments; raises UserError on bad values."""
    try:
        check_cache_policy(args.cache)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, not {args.port}")
    if args.max_upload_size <= 0:
        raise UserError("--max-upload-size must be positive")
    for folder in args.custom_nodes:
        if not folder.is_dir():
            raise UserError(f"--custom-nodes {folder}: not a folder")
    for yaml_file in args.extra_model_paths_config:
        if not yaml_file.is_file():
            raise UserError(f"--extra-model-paths-config {yaml_file}: no such file")
    if args.workers != "ray" and (args.ray_address is not None or args.ray_workers is not None):
        raise UserError("--ray-address and --ray-workers need --workers ray")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UserError(f"--ray-workers must be at least 1, not {args.ray_workers}")
    return ServerConfig(
        base_dir=args.base_dir,
        listen=args.listen,
        port=args.port,
        models_dir=args.models,
        output_dir=args.output,
        input_dir=args.input,
        cache=args.cache,
        auth_token=args.auth_token or None,
        cors_origin=args.cors,
        max_upload_mb=args.max_upload_size,
        precision=args.precision,
        compile=args.compile,
        preload_runtime=True,
        preview_size=args.preview_size,
        custom_nodes_dirs=tuple(args.custom_nodes),
        extra_model_paths=tuple(args.extra_model_paths_config),
        workers=args.workers,
        ray_address=args.ray_address or None,
        ray_workers=args.ray_workers,
        multi_user=args.multi_user,
    )


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    web_root = frontend_root(args.frontend)
    try:
        asyncio.run(serve(config, web_root, default_model=not args.no_default_model))
    except OSError as exc:
        raise UserError(f"cannot serve on {config.listen}:{config.port}: {exc.strerror or exc}") from None
    return 0


async def serve(config: ServerConfig, web_root: Path | None = None, default_model: bool = False) -> None:
    """Run the server until SIGTERM/SIGINT, then shut down gracefully.

    ``web_root`` replaces the editor served at ``/`` (``--frontend comfyui``). With
    ``default_model`` an empty checkpoint folder gets the default checkpoint (the demo model,
    ``nodes.default_model``), so the example workflows run on a fresh machine.
    """
    from aiohttp import web

    from server.app import create_app

    if config.workers == "ray" and config.worker is None:
        config = dataclasses.replace(config, worker=start_ray_pool(config))
    app = create_app(config)
    if default_model:
        ensure_default_model(app)
    if web_root is not None:
        from server.app import WEB_ROOT_KEY

        app[WEB_ROOT_KEY] = web_root
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.listen, config.port)
    try:
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ports = [addr[1] for addr in runner.addresses if isinstance(addr, tuple)]
        host = config.listen if ":" not in config.listen else f"[{config.listen}]"
        # one parseable line: tests and scripts started with --port 0 read the port from it
        print(f"noodlebox: serving on http://{host}:{ports[0] if ports else config.port}", flush=True)
        await stop.wait()
        print("noodlebox: stopping", file=sys.stderr, flush=True)
    finally:
        await runner.cleanup()


def ensure_default_model(app: Any) -> None:
    """Write the default checkpoint into the app's empty checkpoint folder; a failure is only a warning."""
    from nodes.default_model import ensure_default_checkpoint
    from server.app import STATE

    try:
        ensure_default_checkpoint(app[STATE].folders)
    except OSError as exc:
        logging.getLogger(__name__).warning("could not write the default checkpoint: %s", exc)


def start_ray_pool(config: ServerConfig) -> Any:
    """The Ray pool of ``--workers ray``; a missing Ray or an unreachable cluster is a UserError."""
    try:
        import ray  # noqa: F401  (only to give a clear message when the extra is not installed)
    except ImportError:
        raise UserError("--workers ray needs Ray: pip install 'noodlebox[ray]'") from None
    from server.workers.ray_worker import pool_from_config

    config.ensure_dirs()
    try:
        return pool_from_config(config, config.ray_workers, config.ray_address)
    except Exception as exc:  # Ray's own errors (no cluster, an actor that cannot start) included
        where = config.ray_address or "a local Ray instance"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot start Ray workers on {where}: {first}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m server.commands.serve [options]``: the same as ``noodlebox serve``.

    It skips building the other subcommands' parsers (some import torch), so it
    starts faster; scripts and the tests use it.
    """
    parser = argparse.ArgumentParser(prog="noodlebox")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"noodlebox: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
