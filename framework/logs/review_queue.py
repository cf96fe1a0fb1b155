"""The review queue: predictions a person must look at, kept durably.

Predictions routed to ``REVIEW`` are inserted into a SQLite database
(``data/review/queue.db`` by default) in WAL mode, committed before the
server answers, so the queue survives restarts and crashes. A reviewer lists
open items and resolves each with a label and a note (``parity review list |
resolve``); resolutions are kept, never deleted. SQLite is the right tool
here: one file, transactions, concurrent readers, no server to run.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framework.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    score REAL,
    confidence REAL,
    reasons TEXT NOT NULL,
    entity_keys TEXT NOT NULL,
    features TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    label TEXT,
    note TEXT,
    resolved_by TEXT,
    resolved_at TEXT,
    explanation TEXT,
    UNIQUE (request_id, row_index)
);
CREATE INDEX IF NOT EXISTS review_status ON review (status, id);
"""


@dataclass
class ReviewItem:
    id: int
    request_id: str
    row_index: int
    model: str
    version: str
    created_at: str
    score: float | None
    confidence: float | None
    reasons: list[str]
    entity_keys: dict[str, Any]
    features: dict[str, Any]
    status: str
    label: str | None
    note: str | None
    resolved_by: str | None
    resolved_at: str | None
    #: Why the model hesitated: base value and per-feature attributions, if it was explained.
    explanation: dict[str, Any] | None = None


class ReviewQueue:
    """A durable queue of predictions awaiting a human decision (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.executescript(_SCHEMA)
        columns = {row[1] for row in self._con.execute("PRAGMA table_info(review)")}
        if "explanation" not in columns:  # a queue created before explanations existed
            self._con.execute("ALTER TABLE review ADD COLUMN explanation TEXT")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def add(self, items: list[dict[str, Any]]) -> int:
        """Insert items (one transaction); a (request_id, row_index) already queued is kept."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        rows = [
            (
                i["request_id"], i["row_index"], i["model"], i["version"], now,
                i.get("score"), i.get("confidence"), json.dumps(i.get("reasons", [])),
                json.dumps(i.get("entity_keys", {}), default=str),
                json.dumps(i.get("features", {}), default=str),
                json.dumps(i["explanation"], default=str) if i.get("explanation") else None,
            )
            for i in items
        ]  # fmt: skip
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                cur = self._con.executemany(
                    "INSERT OR IGNORE INTO review (request_id, row_index, model, version, "
                    "created_at, score, confidence, reasons, entity_keys, features, explanation) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return int(cur.rowcount)

    def depth(self) -> int:
        with self._lock:
            row = self._con.execute("SELECT count(*) FROM review WHERE status = 'open'").fetchone()
        return int(row[0])

    def list(self, status: str | None = "open", limit: int = 100) -> list[ReviewItem]:
        if status not in (None, "open", "resolved"):
            raise ConfigError(f"The status must be open or resolved. Got {status!r}.")
        query = "SELECT * FROM review"
        params: list[Any] = []
        if status:
            query += " WHERE status = ?"
            params.append(status)
        query += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock:
            cur = self._con.execute(query, params)
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [_item(dict(zip(names, r, strict=True))) for r in rows]

    def resolve(self, item_id: int, *, label: str, by: str, note: str = "") -> ReviewItem:
        """Close an open item with the reviewer's label."""
        if not label:
            raise ConfigError("A resolution needs a label (--label).")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._lock:
            cur = self._con.execute(
                "UPDATE review SET status = 'resolved', label = ?, note = ?, resolved_by = ?, "
                "resolved_at = ? WHERE id = ? AND status = 'open'",
                (label, note, by, now, item_id),
            )
            found = self._con.execute("SELECT status FROM review WHERE id = ?", (item_id,))
            row = found.fetchone()
        if row is None:
            raise ConfigError(f"No review item {item_id}.")
        if cur.rowcount == 0:
            raise ConfigError(f"Review item {item_id} is already resolved.")
        return self.get(item_id)

    def get(self, item_id: int) -> ReviewItem:
        with self._lock:
            cur = self._con.execute("SELECT * FROM review WHERE id = ?", (item_id,))
            names = [d[0] for d in cur.description]
            row = cur.fetchone()
        if row is None:
            raise ConfigError(f"No review item {item_id}.")
        return _item(dict(zip(names, row, strict=True)))


def _item(row: dict[str, Any]) -> ReviewItem:
    for key in ("reasons", "entity_keys", "features"):
        row[key] = json.loads(row[key])
    row["explanation"] = json.loads(row["explanation"]) if row.get("explanation") else None
    return ReviewItem(**row)
