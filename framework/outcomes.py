"""Ground-truth outcomes reported for earlier predictions, stored durably.

Each outcome (request id, entity keys, event time, label or typed outcome,
receive time) is one JSON line appended to ``<root>/date=YYYY-MM-DD/outcomes.jsonl``
and fsynced before the call returns, so an acknowledged outcome survives a
crash. A line cut short by a crash is skipped when read. Joining outcomes to
the prediction log is the feedback work's job; this module only keeps them.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framework.errors import DataError


class OutcomeStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def record(
        self,
        request_id: str,
        *,
        entity_keys: dict[str, Any],
        event_time: datetime | None,
        label: float | None,
        outcome: Any = None,
    ) -> str:
        if not request_id:
            raise DataError("request_id: required.")
        if label is None and outcome is None:
            raise DataError("result: set either 'label' or 'outcome'.")
        received = datetime.now(UTC)
        line = json.dumps(
            {
                "request_id": request_id,
                "entity_keys": entity_keys,
                "event_time": (event_time or received).isoformat(),
                "label": label,
                "outcome": outcome,
                "received_at": received.isoformat(),
            },
            default=str,
        )
        folder = self.root / f"date={received:%Y-%m-%d}"
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / "outcomes.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return "recorded"

    def read(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.root.glob("date=*/outcomes.jsonl")):
            for line in path.read_text().split("\n")[:-1]:
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line a crash cut short
        return out
