"""Ground-truth outcomes reported for earlier predictions, stored durably.

Each outcome (request id, entity keys, event time, label or typed outcome,
receive time) is one JSON line appended to ``<root>/date=YYYY-MM-DD/outcomes.jsonl``
and fsynced before the call returns, so an acknowledged outcome survives a
crash. A line cut short by a crash is skipped when read. Joining outcomes to
the prediction log is :mod:`framework.loop.feedback`'s job; this module only keeps them.
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
        row_index: int | None = None,
    ) -> str:
        """Store one outcome (by request id, or by entity keys + event time)."""
        if not request_id and not (entity_keys and event_time):
            raise DataError("request_id: required, unless entity_keys and event_time are given.")
        if label is None and outcome is None:
            raise DataError("result: set either 'label' or 'outcome'.")
        self.record_many(
            [{"request_id": request_id, "entity_keys": entity_keys, "event_time": event_time,
              "label": label, "outcome": outcome, "row_index": row_index}]
        )  # fmt: skip
        return "recorded"

    def record_many(self, outcomes: list[dict[str, Any]]) -> int:
        """Append outcomes (validated by the caller) and fsync once; their number."""
        received = datetime.now(UTC)
        lines = []
        for o in outcomes:
            record = {
                "request_id": o.get("request_id") or "",
                "entity_keys": o.get("entity_keys") or {},
                "event_time": (o.get("event_time") or received).isoformat(),
                "label": o.get("label"),
                "outcome": o.get("outcome"),
                "received_at": received.isoformat(),
            }
            if o.get("row_index") is not None:
                record["row_index"] = o["row_index"]
            if o.get("observed_at") is not None:
                record["observed_at"] = o["observed_at"].isoformat()
            lines.append(json.dumps(record, default=str))
        folder = self.root / f"date={received:%Y-%m-%d}"
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / "outcomes.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(lines)

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


def label_source(data: Path, model: str) -> Path:
    """Where the joined outcomes of ``model`` are kept as training labels."""
    return Path(data) / "offline" / "feedback" / f"{model}.parquet"
