"""HTTP routes, one module per area; each module exposes ``routes`` (a RouteTableDef).

``ROUTE_MODULES`` are served at ``/X`` and ``/api/X``; ``jobs`` (``/api/jobs`` only) and
``internal`` (the ``/internal`` sub-application) are added by the app factory apart.
"""

from __future__ import annotations

from server.routes import files, frontend, history, object_info, packs, prompt, queue, system, userdata

ROUTE_MODULES = (prompt, queue, history, object_info, files, system, userdata, packs, frontend)
