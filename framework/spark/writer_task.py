"""What an executor runs to write one partition of a view's latest rows online.

:class:`WriteTask` is the function :mod:`framework.spark.materialize` hands to
``mapInArrow``: Spark pickles it to every Python worker and calls it with the
partition's Arrow batches (columns ``k0_{j}`` join keys, ``__ts``, ``__created``,
``f0_{j}`` features, as :func:`framework.spark.sources.scan` names them). Each
batch is encoded into Feast's bytes column by column
(:mod:`framework.materialize.online_encoding`) and written by parity's Redis
bulk writer while the next is encoded (:func:`framework.materialize.pump.pump`);
the partition ends with a flush, so when the task succeeds every write it sent
is stored. It yields one row of counts, the only thing the driver collects.

A task holds only picklable values: paths, the environment variables the
profile names, the view's protobuf, column types as ``ValueType`` numbers. A
Python worker reads the profile with Feast's own ``load_repo_config`` and keeps
the config, the view and its Redis writer (one connection) for the worker's
next task (Spark reuses workers); a task that fails drops its writer, so the
next one starts on a fresh connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from framework.materialize.online_encoding import encode_entity_keys, encode_values
from framework.materialize.pump import pump
from framework.materialize.writer import Batch, OnlineWriter, ViewTarget, Written

#: The row each partition yields (Spark DDL): what its task did.
STATS_SCHEMA = "entities long, written long, skipped long, newest_us long"

#: Per Python worker: (repo, profile, environment) -> Redis writer; view protobuf
#: -> Feast FeatureView. Module globals live as long as the worker.
_WRITERS: dict[tuple[Any, ...], OnlineWriter] = {}
_VIEWS: dict[bytes, Any] = {}


@dataclass
class WriteTask:
    """Writes the partition's rows of one view (see the module docstring)."""

    repo_path: str
    yaml_path: str
    env: dict[str, str]  # the variables the profile names, as the driver has them
    view_proto: bytes
    keys: list[tuple[str, int]]  # (join key, ValueType number), the view's order
    types: dict[str, int]  # feature -> ValueType number, the view's order
    has_bytes: dict[str, bool] = field(default_factory=dict)  # see encode_values

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from feast.value_type import ValueType

        key = (self.repo_path, self.yaml_path, tuple(sorted(self.env.items())))
        writer = self._writer(key)
        target = ViewTarget(self._view(), sorted(self.types))
        keys = [(name, ValueType(number)) for name, number in self.keys]
        types = {name: ValueType(number) for name, number in self.types.items()}
        totals = Written(0, 0)
        entities = 0
        newest: int | None = None

        def encoded() -> Iterator[Any]:
            nonlocal entities, newest
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                ready = self._encode(batch, keys, types, writer.key_version)
                entities += ready.rows
                top = int(ready.event_us.max())
                newest = top if newest is None else max(newest, top)
                yield writer.prepare(target, ready)

        def done(result: Written) -> None:
            totals.written += result.written
            totals.skipped += result.skipped

        try:
            pump(encoded(), lambda item: writer.write(target, item), done)
            writer.flush()  # every write of the partition stored before the task succeeds
        except BaseException:
            _WRITERS.pop(key, None)
            writer.close()
            raise
        row = {
            "entities": [entities],
            "written": [totals.written],
            "skipped": [totals.skipped],
            "newest_us": [newest],
        }
        yield pa.RecordBatch.from_pydict(row, schema=pa.schema([(n, pa.int64()) for n in row]))

    def _writer(self, key: tuple[Any, ...]) -> OnlineWriter:
        """The worker's Redis writer for this profile, opened once."""
        if key not in _WRITERS:
            from feast.repo_config import load_repo_config

            from framework.materialize.redis_writer import RedisWriter

            # Feast expands ${VAR} from os.environ; a worker's environment is the JVM's.
            os.environ.update(self.env)
            config = load_repo_config(Path(self.repo_path), Path(self.yaml_path))
            # RedisWriter reads only the store's config.
            _WRITERS[key] = RedisWriter(SimpleNamespace(config=config))
        return _WRITERS[key]

    def _view(self) -> Any:
        if self.view_proto not in _VIEWS:
            from feast import FeatureView
            from feast.protos.feast.core.FeatureView_pb2 import FeatureView as ViewProto

            _VIEWS[self.view_proto] = FeatureView.from_proto(ViewProto.FromString(self.view_proto))
        return _VIEWS[self.view_proto]

    def _encode(
        self,
        batch: pa.RecordBatch,
        keys: list[tuple[str, Any]],
        types: dict[str, Any],
        version: int,
    ) -> Batch:
        """One Arrow batch in Feast's bytes, as ``LatestRows`` encodes the DuckDB path's."""
        encoded_keys = encode_entity_keys(
            [(name, batch.column(f"k0_{j}"), vt) for j, (name, vt) in enumerate(keys)],
            version=version,
        )
        values = {
            name: encode_values(
                batch.column(f"f0_{j}"), vt, column_has_bytes=self.has_bytes.get(name)
            )
            for j, (name, vt) in enumerate(types.items())
        }
        event = pc.cast(batch.column("__ts"), pa.timestamp("us", "UTC")).cast(pa.int64())
        return Batch(
            keys=encoded_keys,
            values=values,
            texts={},
            event_us=np.asarray(event.to_numpy(zero_copy_only=False), np.int64),
            created_us=None,  # Redis keeps no created time (only SQLite does)
        )
