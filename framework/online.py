"""Online feature vectors with the offline join's semantics.

:class:`OnlineFeatures` reads a feature service's features for entity rows
through Feast's ``get_online_features`` and then makes them agree with the
point-in-time join that built the training set:

- **TTL is enforced.** Feast 0.67 returns a value older than its view's TTL
  with status ``PRESENT`` (feast-dev/feast#6821), while the offline join drops
  it. Here such a value becomes null with status ``OUTSIDE_MAX_AGE``, exactly as
  ``build_training_set`` at the same time would have it.
- **On-demand features are computed after that,** by Feast's own
  transformation code (``OnDemandFeatureView.transform_arrow``, the call the
  training-set builder makes), from the TTL-checked inputs and the request data.

Each feature comes back with a status: ``PRESENT``, ``NOT_FOUND``,
``NULL_VALUE``, ``OUTSIDE_MAX_AGE`` (Feast's ``FieldStatus`` names) or
``COMPUTED`` for on-demand features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from framework.errors import DataError

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
NULL_VALUE = "NULL_VALUE"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
COMPUTED = "COMPUTED"


@dataclass
class OnlineVectors:
    """Feature vectors for a batch of rows: a table in the model's feature order (plus
    join keys and request data), per-feature statuses and event times (µs, 0 = none)."""

    table: pa.Table
    features: list[str]
    status: dict[str, list[str]]
    event_time_us: dict[str, list[int]]

    def slice(self, start: int, rows: int) -> OnlineVectors:
        """Rows ``start`` .. ``start + rows - 1`` (zero-copy for the table)."""
        end = start + rows
        return OnlineVectors(
            table=self.table.slice(start, rows),
            features=self.features,
            status={k: v[start:end] for k, v in self.status.items()},
            event_time_us={k: v[start:end] for k, v in self.event_time_us.items()},
        )


class OnlineFeatures:
    """Reads one feature service's vectors for entity rows, TTL enforced.

    Parameters
    ----------
    store
        A Feast ``FeatureStore``.
    feature_service
        The feature service the model was trained on.
    clock
        Seconds since the epoch, ``time.time`` by default (tests pass a fixed one).
    """

    def __init__(
        self, store: Any, feature_service: str, clock: Callable[[], float] = time.time
    ) -> None:
        from feast.type_map import feast_value_type_to_pa

        from framework.training_set import _plan

        self.store = store
        self.clock = clock
        self.plan = _plan(store, feature_service, False)
        self.features = [r.split(":", 1)[1] for r in self.plan.refs]
        self.join_keys: list[str] = []
        self.refs: list[str] = []
        self._ttl_us: dict[str, int | None] = {}
        self._types: dict[str, pa.DataType] = {}
        for view in self.plan.views:
            fv = store.get_feature_view(view.name)
            dtypes = {f.name: f.dtype for f in fv.features}
            for key in view.join_keys.values():
                if key not in self.join_keys:
                    self.join_keys.append(key)
            ttl = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else None
            for feature in view.features:
                self.refs.append(f"{view.projection_name}:{feature}")
                self._ttl_us[feature] = ttl
                self._types[feature] = feast_value_type_to_pa(dtypes[feature].to_value_type())
        for key in self.join_keys:
            self._types[key] = pa.int64()
        self.request_fields: dict[str, pa.DataType] = {}
        for odfv in self.plan.odfvs:
            for name, value_type in odfv.get_request_data_schema().items():
                self.request_fields[name] = feast_value_type_to_pa(value_type)

    def bound_reads(self, seconds: float) -> bool:
        """Make the store itself give up a read after ``seconds``, where it can; returns
        whether it could.

        A local SQLite file can: a read waits only for a writer's lock, and its busy
        timeout bounds that wait (Feast opens the connection with Python's 5 s default).
        Network stores (Redis, PostgreSQL, ...) cannot promise it from here: their
        clients retry and wait on sockets, so a caller that must answer within a budget
        reads them on a thread it can stop waiting for.
        """
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online_store = self.store._get_provider().online_store
        if not isinstance(online_store, SqliteOnlineStore):
            return False
        connection = online_store._get_conn(self.store.config)
        connection.execute(f"PRAGMA busy_timeout = {max(1, round(seconds * 1000))}")
        return True

    def read(
        self, entity_rows: Sequence[dict[str, Any]], request_data: Sequence[dict[str, Any]]
    ) -> OnlineVectors:
        """Vectors for ``entity_rows`` (join keys) with ``request_data`` (one dict per row)."""
        from feast.type_map import feast_value_type_to_python_type

        from framework import on_demand

        response = self.store.get_online_features(
            features=self.refs, entity_rows=[dict(r) for r in entity_rows]
        ).proto
        now_us = int(self.clock() * 1_000_000)
        names = list(response.metadata.feature_names.val)
        n = len(entity_rows)
        columns: dict[str, list[Any]] = {}
        status: dict[str, list[str]] = {}
        event_us: dict[str, list[int]] = {}
        for name, result in zip(names, response.results, strict=True):
            if name in self.join_keys:
                columns[name] = [feast_value_type_to_python_type(v) for v in result.values]
                continue
            ttl = self._ttl_us.get(name)
            values, states, times = [], [], []
            for value, state, ts in zip(
                result.values, result.statuses, result.event_timestamps, strict=True
            ):
                t_us = ts.seconds * 1_000_000 + ts.nanos // 1_000
                label = _STATUS.get(state, NOT_FOUND)
                v = feast_value_type_to_python_type(value) if label == PRESENT else None
                if label == PRESENT and ttl is not None and now_us - t_us > ttl:
                    v, label = None, OUTSIDE_MAX_AGE
                if label == PRESENT and v is None:
                    label = NULL_VALUE
                values.append(v)
                states.append(label)
                times.append(t_us if label in (PRESENT, OUTSIDE_MAX_AGE) else 0)
            columns[name], status[name], event_us[name] = values, states, times
        for field, dtype in self.request_fields.items():
            columns[field] = [row.get(field) for row in request_data]
            self._types.setdefault(field, dtype)
        table = pa.table(
            {name: pa.array(values, type=self._types.get(name)) for name, values in columns.items()}
        )
        if self.plan.odfvs:
            try:
                table = on_demand.apply(table, self.plan, False)
            except Exception as exc:
                raise DataError(f"An on-demand transformation failed: {exc}") from exc
            if any(pa.types.is_null(f.type) for f in table.schema):
                # Every row null (a new user, say): Feast infers Arrow's null type; the
                # view's declared type keeps one schema for clients and the prediction log.
                table = on_demand.as_schema(
                    table, on_demand.declared_types(table.schema, self.plan)
                )
            for odfv in self.plan.odfvs:
                for feature in odfv.features:
                    if feature.name in self.features:
                        status[feature.name] = [COMPUTED] * n
                        event_us[feature.name] = [0] * n
        return OnlineVectors(
            table=table, features=self.features, status=status, event_time_us=event_us
        )


def _status_names() -> dict[int, str]:
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    return {int(v): k for k, v in FieldStatus.items()}


_STATUS = _status_names()
