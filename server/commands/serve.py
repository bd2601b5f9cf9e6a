"""``noodlebox serve``: the editor and the ComfyUI-compatible API on one port.

Stops gracefully on SIGTERM and SIGINT: the running prompt is interrupted and put
back in the queue (it runs again at the next start), sockets are closed, and the
database is checkpointed and closed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from server.cli import UserError
from server.config import ServerConfig, check_cache_policy

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


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
    p.add_argument("--preview-size", type=int, default=512, help="largest side of live previews in pixels")
    p.add_argument("--custom-nodes", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of ComfyUI custom node packs (repeatable)")
    p.add_argument("--extra-model-paths-config", type=Path, action="append", default=[], metavar="YAML",
                   help="an extra_model_paths.yaml (repeatable)")
    p.add_argument("--verbose", action="store_true", help="log at INFO level")
    p.set_defaults(func=_serve)


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
        preview_size=args.preview_size,
        custom_nodes_dirs=tuple(args.custom_nodes),
        extra_model_paths=tuple(args.extra_model_paths_config),
    )


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        raise UserError(f"cannot serve on {config.listen}:{config.port}: {exc.strerror or exc}") from None
    return 0


async def serve(config: ServerConfig) -> None:
    """Run the server until SIGTERM/SIGINT, then shut down gracefully."""
    from aiohttp import web

    from server.app import create_app

    app = create_app(config)
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
