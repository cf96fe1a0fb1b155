"""The interface of a bulk online-store writer, and the batches it writes.

A writer (:class:`OnlineWriter`) takes a view's rows as encoded :class:`Batch` es and
keeps parity's per-view state next to the data; :mod:`framework.materialize.online_write`
chooses the writer for a store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass
class Batch:
    """One batch of a view, encoded: everything a writer needs, column by column.

    ``values`` maps each feature (sorted by name) to serialized ``feast.types.Value``
    bytes; ``texts`` to SQLite's ``value_text`` column (Python values or None).
    """

    keys: pa.Array  # serialize_entity_key bytes
    values: dict[str, pa.Array]
    texts: dict[str, list[Any]]
    event_us: np.ndarray
    created_us: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(self.keys)


@dataclass
class Written:
    """What one batch did: entities written, and entities left as they were (Redis:
    the stored value was as new or newer)."""

    written: int
    skipped: int = 0


@dataclass
class ViewTarget:
    """A feature view as a writer addresses it."""

    view: Any  # feast FeatureView
    features: list[str] = field(default_factory=list)  # sorted


class OnlineWriter:
    """Base class: bulk writes of :class:`Batch` es plus parity's per-view state."""

    kind = ""
    #: Whether batches should arrive in serialized-key order (SQLite: yes).
    wants_key_order = False
    #: Whether batches need SQLite's ``value_text`` column.
    wants_texts = False
    #: The repository's ``entity_key_serialization_version`` (keys are written in it).
    key_version = 3

    def check(self, targets: list[ViewTarget]) -> None:
        """Fail before anything is written when a view cannot be written."""

    def prepare(self, target: ViewTarget, batch: Batch) -> Any:
        """Turn a batch into what :meth:`write` sends (runs ahead, on the producer side)."""
        raise NotImplementedError

    def write(self, target: ViewTarget, prepared: Any) -> Written:
        raise NotImplementedError

    def flush(self) -> None:
        """Return once every batch written so far is stored (raise if one was refused)."""

    def read_state(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def write_state(self, view: str, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        return self.kind


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
