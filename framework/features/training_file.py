"""A training set's provenance, stored in its Arrow schema (or Parquet file) metadata.

:class:`TrainingSetInfo` is JSON under ``parity.training_set``; the dataset
fingerprint is also under ``parity.fingerprint`` on its own, for a quick compare.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from framework.errors import DataError

METADATA_KEY = b"parity.training_set"
FINGERPRINT_KEY = b"parity.fingerprint"


@dataclass
class TrainingSetInfo:
    """What a training set was built from; stored as JSON in the schema metadata."""

    fingerprint: str
    engine: str  # "duckdb" or "feast"
    engine_reason: str
    feature_service: str | None
    features: list[str]
    full_feature_names: bool
    timestamp_column: str
    entity_rows: int
    entity_digest: str
    definitions_digest: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    #: Per feature read from a source row: the ages of its values at their entity rows
    #: (:mod:`framework.features.feature_ages`); None when not measured (a streamed or
    #: Feast-built set, or one written before ages were).
    ages: dict[str, dict[str, Any]] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def with_metadata(schema: pa.Schema, info: TrainingSetInfo) -> pa.Schema:
    """``schema`` with ``info`` (and its fingerprint) in its metadata."""
    meta = dict(schema.metadata or {})
    meta[METADATA_KEY] = info.to_json().encode()
    meta[FINGERPRINT_KEY] = info.fingerprint.encode()
    return schema.with_metadata(meta)


def read_info(table_or_path: pa.Table | Path) -> TrainingSetInfo:
    """The :class:`TrainingSetInfo` stored with a training set (table or Parquet file)."""
    if isinstance(table_or_path, pa.Table):
        meta = table_or_path.schema.metadata or {}
    else:  # the file's key-value metadata, where write_training_set puts it
        meta = pq.read_metadata(table_or_path).metadata or {}
    if METADATA_KEY not in meta:
        raise DataError("This table carries no parity training-set metadata.")
    return TrainingSetInfo(**json.loads(meta[METADATA_KEY]))
