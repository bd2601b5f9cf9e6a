"""``GET /api/jobs`` and ``/api/jobs/{id}`` (PROTOCOL 1.6), only under ``/api``.

Statuses: ``pending``, ``in_progress``, ``completed``, ``failed`` and ``cancelled``
(an interrupted prompt; newer frontends ask for it, PROTOCOL 1.6 version skew).
Extension: an in-progress job has ``worker``, the name of the worker running it
(``local``, or a Ray actor such as ``ray-1`` with ``serve --workers ray``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.app import state_of
from server.workers.base import QueueItem
from server.workers.pool import running_on

routes = web.RouteTableDef()

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
_PREVIEW_KEYS = ("images", "video", "audio")
_3D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb")


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _workflow_id(extra_data: dict[str, Any]) -> Any:
    pnginfo = extra_data.get("extra_pnginfo")
    workflow = pnginfo.get("workflow") if isinstance(pnginfo, dict) else None
    return workflow.get("id") if isinstance(workflow, dict) else None


def _prune(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if v is not None}


def queued_job(item: QueueItem, status: str) -> dict[str, Any]:
    """The job of a pending or running prompt."""
    return _prune(
        {
            "id": item.prompt_id,
            "status": status,
            "priority": item.number,
            "create_time": item.extra_data.get("create_time"),
            "workflow_id": _workflow_id(item.extra_data),
        }
    )


def _is_previewable(item: dict[str, Any], key: str) -> bool:
    if key in _PREVIEW_KEYS:
        return True
    fmt = str(item.get("format", ""))
    if fmt.startswith(("video/", "audio/")):
        return True
    return str(item.get("filename", "")).lower().endswith(_3D_EXTENSIONS)


def _outputs_summary(outputs: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """How many output items there are, and the first previewable one (``output`` type first)."""
    count = 0
    first: dict[str, Any] | None = None
    first_output: dict[str, Any] | None = None
    for node_id, ui in outputs.items():
        if not isinstance(ui, dict):
            continue
        for key, items in ui.items():
            if key == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if _is_previewable(item, key):
                    media = "images" if key == "images" else key
                    preview = {**item, "nodeId": node_id, "mediaType": media}
                    first = first or preview
                    if item.get("type") == "output":
                        first_output = first_output or preview
    return count, first_output or first


def history_job(prompt_id: str, entry: dict[str, Any], detail: bool = False) -> dict[str, Any]:
    """The job of a finished prompt, from its history entry."""
    number, _, prompt, extra_data, _ = (entry.get("prompt") or [None] * 5)[:5]
    extra_data = extra_data if isinstance(extra_data, dict) else {}
    status_info = entry.get("status") or {}
    messages = status_info.get("messages") or []
    times: dict[str, Any] = {}
    error = None
    for event, data in messages:
        if isinstance(data, dict):
            times[event] = data.get("timestamp")
            if event == "execution_error":
                error = data
    if "execution_interrupted" in times:
        status = "cancelled"
    elif status_info.get("status_str") == "error":
        status = "failed"
    else:
        status = "completed"
    end = times.get("execution_success") or times.get("execution_error") or times.get("execution_interrupted")
    outputs = entry.get("outputs") or {}
    count, preview = _outputs_summary(outputs)
    job = {
        "id": prompt_id,
        "status": status,
        "priority": number,
        "create_time": extra_data.get("create_time"),
        "execution_start_time": times.get("execution_start"),
        "execution_end_time": end,
        "execution_error": error,
        "outputs_count": count,
        "preview_output": preview,
        "workflow_id": _workflow_id(extra_data),
    }
    if detail:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return _prune(job)


def _running_on(state: Any) -> dict[str, str]:
    """``{prompt id: worker name}`` of the running prompts."""
    return running_on(state.worker.status()) if state.worker is not None else {}


def _with_worker(job: dict[str, Any], on: dict[str, str]) -> dict[str, Any]:
    """An in-progress job with the extension field ``worker`` (who runs it), when known."""
    worker = on.get(job["id"])
    return {**job, "worker": worker} if worker else job


def _duration(job: dict[str, Any]) -> float:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return float(end - start) if start is not None and end is not None else -1.0


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Jobs filtered by status/workflow, sorted and paginated."""
    query = request.query
    wanted = set(STATUSES)
    if query.get("status"):
        wanted = {s.strip() for s in query["status"].split(",") if s.strip()}
        unknown = wanted - set(STATUSES)
        if unknown:
            return _bad(f"Invalid status: {', '.join(sorted(unknown))}. Valid: {', '.join(STATUSES)}")
    sort_by = query.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration"):
        return _bad("sort_by must be 'created_at' or 'execution_duration'")
    sort_order = query.get("sort_order", "desc")
    if sort_order not in ("asc", "desc"):
        return _bad("sort_order must be 'asc' or 'desc'")
    limit: int | None = None
    if query.get("limit") is not None:
        try:
            limit = int(query["limit"])
        except ValueError:
            return _bad("limit must be an integer")
        if limit <= 0:
            return _bad("limit must be a positive integer")
    try:
        offset = max(int(query.get("offset", "0")), 0)
    except ValueError:
        return _bad("offset must be an integer")

    state = state_of(request)
    assert state.queue is not None and state.store is not None
    jobs: list[dict[str, Any]] = []
    if "in_progress" in wanted:
        on = _running_on(state)
        jobs.extend(_with_worker(queued_job(item, "in_progress"), on) for item in state.queue.running_items())
    if "pending" in wanted:
        jobs.extend(queued_job(item, "pending") for item in state.queue.pending())
    if wanted & {"completed", "failed", "cancelled"}:
        for prompt_id, entry in state.store.history().items():
            job = history_job(prompt_id, entry)
            if job["status"] in wanted:
                jobs.append(job)
    workflow_id = query.get("workflow_id")
    if workflow_id:
        jobs = [j for j in jobs if j.get("workflow_id") == workflow_id]
    if sort_by == "execution_duration":
        jobs.sort(key=_duration, reverse=sort_order == "desc")
    else:
        jobs.sort(key=lambda j: j.get("create_time") or 0, reverse=sort_order == "desc")
    total = len(jobs)
    page = jobs[offset : offset + limit] if limit is not None else jobs[offset:]
    return web.json_response(
        {
            "jobs": page,
            "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(page) < total},
        }
    )


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """One job with details; 404 ``{"error": "Job not found"}`` if unknown."""
    state = state_of(request)
    assert state.queue is not None and state.store is not None
    job_id = request.match_info["job_id"]
    running = state.queue.active.get(job_id)
    if running is not None:
        return web.json_response(_with_worker(queued_job(running, "in_progress"), _running_on(state)))
    for item in state.queue.pending():
        if item.prompt_id == job_id:
            return web.json_response(queued_job(item, "pending"))
    entry = state.store.history_entry(job_id)
    if entry is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(history_job(job_id, entry, detail=True))
