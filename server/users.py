"""Users of ``--multi-user`` mode (ComfyUI's): ids in ``<user dir>/users.json``, chosen by the ``Comfy-User`` header.

Without the mode every request is user ``default``. With it, a request's ``Comfy-User``
header must name a known user id (403 otherwise); a request without it is ``default``.
A new user's id is its name made safe for a folder name plus a random suffix, as
ComfyUI makes them; each user's settings and files live in ``<user dir>/<id>``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

DEFAULT_USER = "default"
_lock = threading.Lock()


def _users_file(config: Any) -> Path:
    return Path(config.user_dir) / "users.json"


def load_users(config: Any) -> dict[str, str]:
    """User id -> name (empty when none was created)."""
    try:
        users = json.loads(_users_file(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in users.items()} if isinstance(users, dict) else {}


def create_user(config: Any, name: str) -> str:
    """Add a user called ``name``; returns its id (ValueError if the name is taken)."""
    with _lock:
        users = load_users(config)
        if name in users.values():
            raise ValueError(f"a user called {name!r} already exists")
        user_id = re.sub(r"[^a-zA-Z0-9_-]+", "-", name) + "_" + uuid.uuid4().hex
        users[user_id] = name
        path = _users_file(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".users.json.part")
        tmp.write_text(json.dumps(users, indent=1), encoding="utf-8")
        os.replace(tmp, path)  # never half a users file
    return user_id


def request_user(request: web.Request) -> str:
    """The id of the user making ``request`` (403 for an unknown ``Comfy-User``)."""
    from server.app import json_error, state_of

    config = state_of(request).config
    header = request.headers.get("comfy-user")
    if not getattr(config, "multi_user", False) or not header:
        return DEFAULT_USER
    if header != DEFAULT_USER and header not in load_users(config):
        raise json_error(403, f"unknown user: {header}")
    return header
