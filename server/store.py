"""The durable queue and history: one SQLite database in WAL mode.

Every write is a committed transaction before the caller goes on, so a prompt that
``POST /prompt`` answered with 200 is on disk, and a finished prompt's history entry
is on disk before anyone is told it is done. WAL with ``synchronous=NORMAL`` survives a
killed process (the case that matters for a server); only a power cut can lose the
last transactions.

One connection is shared behind a lock: the event loop thread does all writes, the
lock only guards the rare reads from other threads. Values are stored as JSON text.

Tables:

- ``queue``: accepted prompts not yet finished, ``state`` = ``pending`` or
  ``running``, ``attempts`` = how many times a run was started.
- ``history``: ComfyUI history entries (PROTOCOL 5.7) in insertion order (``seq``),
  at most :data:`HISTORY_MAX` (the oldest are dropped).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from server.workers.base import QueueItem

#: ComfyUI keeps at most this many history entries.
HISTORY_MAX = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    seq INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs TEXT NOT NULL,
    sensitive TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    number REAL NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _dumps(value: Any) -> str:
    # default=str: a custom node's odd ui value must not make a finished prompt unstorable
    return json.dumps(value, separators=(",", ":"), default=str)


class Store:
    """The SQLite file behind the queue and the history."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Checkpoint and close the database."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        """Run ``statements`` as one committed transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- queue ---------------------------------------------------------------------

    def add_pending(self, item: QueueItem) -> None:
        """Commit a newly accepted prompt."""
        self._write(
            [
                (
                    "INSERT INTO queue (prompt_id, number, seq, prompt, extra_data, outputs, sensitive)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.prompt_id,
                        item.number,
                        item.seq,
                        _dumps(item.prompt),
                        _dumps(item.extra_data),
                        _dumps(item.outputs),
                        _dumps(item.sensitive),
                    ),
                )
            ]
        )

    def mark_running(self, prompt_id: str) -> None:
        """Record that a run of ``prompt_id`` started (counts the attempt)."""
        self._write([("UPDATE queue SET state='running', attempts=attempts+1 WHERE prompt_id=?", (prompt_id,))])

    def requeue(self, prompt_id: str, refund: bool = False) -> None:
        """Put a prompt that was running back to pending; ``refund`` un-counts its attempt."""
        self._write(
            [
                (
                    "UPDATE queue SET state='pending', attempts=MAX(attempts-?, 0) WHERE prompt_id=?",
                    (1 if refund else 0, prompt_id),
                )
            ]
        )

    def delete_pending(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts (running ones are left alone)."""
        self._write([("DELETE FROM queue WHERE prompt_id=? AND state='pending'", (pid,)) for pid in prompt_ids])

    def load_queue(self) -> list[tuple[QueueItem, str, int]]:
        """Every unfinished prompt as ``(item, state, attempts)``, in acceptance order."""
        rows = self._read(
            "SELECT prompt_id, number, seq, prompt, extra_data, outputs, sensitive, state, attempts"
            " FROM queue ORDER BY seq"
        )
        return [
            (
                QueueItem(
                    number=row[1],
                    prompt_id=row[0],
                    prompt=json.loads(row[3]),
                    extra_data=json.loads(row[4]),
                    outputs=json.loads(row[5]),
                    sensitive=json.loads(row[6]),
                    seq=row[2],
                ),
                row[7],
                row[8],
            )
            for row in rows
        ]

    def max_seq(self) -> int:
        """The highest acceptance counter ever stored (queue or history), 0 if none."""
        rows = self._read("SELECT MAX(seq) FROM queue UNION ALL SELECT value FROM meta WHERE key='seq'")
        return max((int(r[0]) for r in rows if r[0] is not None), default=0)

    def max_number(self) -> float:
        """The highest priority number seen in the queue or history (so counters resume past it)."""
        rows = self._read("SELECT MAX(number) FROM queue UNION ALL SELECT MAX(number) FROM history")
        return max((float(r[0]) for r in rows if r[0] is not None), default=-1.0)

    # -- history -------------------------------------------------------------------

    def finish(self, item: QueueItem, entry: dict[str, Any]) -> None:
        """Atomically move ``item`` from the queue to the history as ``entry``."""
        self._write(
            [
                ("DELETE FROM queue WHERE prompt_id=?", (item.prompt_id,)),
                ("DELETE FROM history WHERE prompt_id=?", (item.prompt_id,)),
                (
                    "INSERT INTO history (prompt_id, number, entry) VALUES (?, ?, ?)",
                    (item.prompt_id, item.number, _dumps(entry)),
                ),
                (
                    "INSERT INTO meta (key, value) VALUES ('seq', ?) ON CONFLICT(key) DO UPDATE"
                    " SET value=MAX(CAST(value AS INTEGER), excluded.value)",
                    (item.seq,),
                ),
                (
                    "DELETE FROM history WHERE seq <= (SELECT MAX(seq) FROM history) - ?",
                    (HISTORY_MAX,),
                ),
            ]
        )

    def history(self, max_items: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """History entries oldest first, with ComfyUI's ``max_items``/``offset`` rules.

        Without ``offset``, ``max_items`` selects the *last* entries; with ``offset``,
        up to ``max_items`` entries from that index.
        """
        if offset is None and max_items is not None:
            rows = self._read(
                "SELECT prompt_id, entry FROM (SELECT * FROM history ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (max(max_items, 0),),
            )
        else:
            limit = -1 if max_items is None else max(max_items, 0)
            rows = self._read(
                "SELECT prompt_id, entry FROM history ORDER BY seq LIMIT ? OFFSET ?",
                (limit, max(offset or 0, 0)),
            )
        return {pid: json.loads(entry) for pid, entry in rows}

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        """One history entry, or None."""
        rows = self._read("SELECT entry FROM history WHERE prompt_id=?", (prompt_id,))
        return json.loads(rows[0][0]) if rows else None

    def history_count(self) -> int:
        """How many history entries are stored."""
        return int(self._read("SELECT COUNT(*) FROM history")[0][0])

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        """Remove history entries."""
        self._write([("DELETE FROM history WHERE prompt_id=?", (pid,)) for pid in prompt_ids])

    def clear_history(self) -> None:
        """Remove every history entry."""
        self._write([("DELETE FROM history", ())])
