"""``GET /prompt`` and ``POST /prompt`` (PROTOCOL 1.3 and 2.5)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from server.app import state_of
from server.workers.base import QueueItem

routes = web.RouteTableDef()

#: ``extra_data`` keys that are secrets: kept out of /queue, /history and jobs.
SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


def prompt_error(error_type: str, message: str, details: str = "", status: int = 400) -> web.Response:
    """A ComfyUI-shaped ``{"error": {...}, "node_errors": {}}`` response."""
    body = {
        "error": {"type": error_type, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }
    return web.json_response(body, status=status)


@routes.get("/prompt")
async def get_prompt(request: web.Request) -> web.Response:
    """``{"exec_info": {"queue_remaining": N}}``."""
    return web.json_response(state_of(request).queue_status()["status"])


@routes.post("/prompt")
async def post_prompt(request: web.Request) -> web.Response:
    """Validate a prompt and queue it; 200 with its id and number, or 400 with errors."""
    state = state_of(request)
    queue = state.queue
    assert queue is not None
    try:
        body = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        return prompt_error("invalid_prompt", "Invalid JSON body", str(exc))
    if not isinstance(body, dict):
        return prompt_error("invalid_prompt", "The request body must be a JSON object", type(body).__name__)

    # the counter moves on every POST without "number", valid or not (ComfyUI's rule)
    if "number" in body:
        try:
            number: float = float(body["number"])
        except (TypeError, ValueError):
            return prompt_error("invalid_prompt", "number must be a number", repr(body["number"]))
    else:
        number = queue.next_number(bool(body.get("front")))

    prompt = body.get("prompt")
    if prompt is None:
        return prompt_error("no_prompt", "No prompt provided", "No prompt provided")
    if not isinstance(prompt, dict):
        return prompt_error("invalid_prompt", "The prompt must be a JSON object", type(prompt).__name__)
    targets = body.get("partial_execution_targets")
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        return prompt_error("invalid_prompt", "partial_execution_targets must be a list of node ids", repr(targets))
    extra_data = body.get("extra_data", {})
    if not isinstance(extra_data, dict):
        return prompt_error("invalid_prompt", "extra_data must be a JSON object", type(extra_data).__name__)
    prompt_id = str(body["prompt_id"]) if body.get("prompt_id") is not None else str(uuid.uuid4())
    if queue.contains(prompt_id):
        return prompt_error("invalid_prompt", "A prompt with this prompt_id is already queued", prompt_id)

    from graph.validate import validate_prompt

    # validation may call node code (VALIDATE_INPUTS, file listings): keep it off the loop
    result = await asyncio.get_running_loop().run_in_executor(
        None, validate_prompt, prompt, state.registry, targets
    )
    if not result.ok:
        return web.json_response(result.response_body(), status=400)

    extra_data = dict(extra_data)
    sensitive = {key: extra_data.pop(key) for key in SENSITIVE_KEYS if key in extra_data}
    client_id = body.get("client_id")
    if client_id is not None:
        extra_data["client_id"] = client_id
    extra_data["create_time"] = int(time.time() * 1000)
    item = QueueItem(
        number=number,
        prompt_id=prompt_id,
        prompt=result.prompt,
        extra_data=extra_data,
        outputs=list(result.outputs),
        sensitive=sensitive,
    )
    if queue.contains(prompt_id):  # posted twice concurrently while validating
        return prompt_error("invalid_prompt", "A prompt with this prompt_id is already queued", prompt_id)
    queue.put(item)  # committed to disk before the answer
    body_out: dict[str, Any] = {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
    return web.json_response(body_out)
