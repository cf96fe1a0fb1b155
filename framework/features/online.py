"""Online feature vectors with the offline join's semantics.

:class:`OnlineFeatures` reads a feature service's features for entity rows
as Feast's ``get_online_features`` gives them (through Feast, or read directly
from Feast's SQLite and Redis layouts: :mod:`framework.features.online_read`) and
then makes them agree with the point-in-time join that built the training set:

- **TTL is enforced.** Feast 0.67 returns a value older than its view's TTL
  with status ``PRESENT`` (feast-dev/feast#6821), while the offline join drops
  it. Here such a value becomes null with status ``OUTSIDE_MAX_AGE``, exactly as
  ``build_training_set`` at the same time would have it.
- **On-demand features are computed after that,** by Feast's own
  transformation code from the TTL-checked inputs and the request data: a
  python-mode view's UDF on lists (``PythonTransformation.transform``, what
  ``transform_arrow`` runs after ``to_pydict``), any other mode through
  ``transform_arrow``, the call the training-set builder makes
  (:func:`framework.features.on_demand.apply_columns`).

Vectors stay Python values per column on the request path (:class:`OnlineVectors`);
an Arrow table of them is built only when something asks for one.

Each feature comes back with a status: ``PRESENT``, ``NOT_FOUND``,
``NULL_VALUE``, ``OUTSIDE_MAX_AGE`` (Feast's ``FieldStatus`` names) or
``COMPUTED`` for on-demand features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from framework.errors import DataError
from framework.features.on_demand import online_views
from framework.features.online_read import reader_for

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
NULL_VALUE = "NULL_VALUE"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
COMPUTED = "COMPUTED"
_NO_TTL = -(1 << 100)  # an event time no view without a TTL can be older than


class OnlineVectors:
    """Feature vectors for a batch of rows: per column (join keys, request data, features)
    its Python values, per feature its statuses and event times (µs, 0 = none).

    The request path reads the columns (:meth:`values`); an Arrow table of them
    (:attr:`table`, each column of the type Feast declares for it) is built only when
    something asks for one, once. Built from a table (features a client supplied), the
    columns are read from it instead.
    """

    def __init__(
        self,
        columns: dict[str, list[Any]] | None = None,
        *,
        features: list[str],
        status: dict[str, list[str]],
        event_time_us: dict[str, list[int]],
        types: dict[str, pa.DataType | None] | None = None,
        table: pa.Table | None = None,
    ) -> None:
        if (columns is None) == (table is None):
            raise ValueError("OnlineVectors needs columns or a table, not both")
        self._columns = columns
        self._table = table
        self.features = features
        self.status = status
        self.event_time_us = event_time_us
        self.types = types or ({} if table is None else {f.name: f.type for f in table.schema})

    @property
    def num_rows(self) -> int:
        if self._table is not None:
            return int(self._table.num_rows)
        assert self._columns is not None
        return len(next(iter(self._columns.values()), []))

    @property
    def column_names(self) -> list[str]:
        if self._table is not None:
            return list(self._table.column_names)
        assert self._columns is not None
        return list(self._columns)

    def values(self, name: str) -> list[Any]:
        """Column ``name``'s Python values."""
        if self._columns is None:
            assert self._table is not None
            self._columns = self._table.to_pydict()
        return self._columns[name]

    def array(self, name: str) -> pa.Array:
        """Column ``name`` as the Arrow type Feast declares for it (inferred where Feast
        declares none); a value that type cannot hold is a :class:`DataError` naming it."""
        if self._table is not None:
            return self._table.column(name).combine_chunks()
        return to_arrow(name, self.values(name), self.types.get(name))

    @property
    def table(self) -> pa.Table:
        """Every column as an Arrow table (built once, on first use)."""
        if self._table is None:
            self._table = pa.table({name: self.array(name) for name in self.column_names})
        return self._table

    def slice(self, start: int, rows: int) -> OnlineVectors:
        """Rows ``start`` .. ``start + rows - 1``."""
        end = start + rows
        parts: dict[str, Any] = {
            "features": self.features,
            "status": {k: v[start:end] for k, v in self.status.items()},
            "event_time_us": {k: v[start:end] for k, v in self.event_time_us.items()},
            "types": self.types,
        }
        if self._columns is None:
            return OnlineVectors(table=self.table.slice(start, rows), **parts)
        return OnlineVectors({k: v[start:end] for k, v in self._columns.items()}, **parts)


def to_arrow(name: str, values: list[Any], kind: pa.DataType | None) -> pa.Array:
    """``values`` as ``kind`` (inferred when None); a value that type cannot hold is a
    :class:`DataError` naming ``name``."""
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        bad = next((v for v in values if v is not None), None)
        raise DataError(
            f"The online value of {name!r} cannot be read as {kind}: "
            f"{' '.join(str(exc).split())[:200]} (value {bad!r:.100})."
        ) from exc


class OnlineFeatures:
    """Reads one feature service's vectors for entity rows, TTL enforced.

    The read asks the store for the service's feature-view projections
    (``view[[...]]``, ``with_name``, ``with_join_key_map``) widened to every feature an
    on-demand view of the service sources, and without the on-demand views: those are
    computed here, after the TTL check, by :mod:`framework.features.on_demand` (the
    training-set code). The reader (:func:`framework.features.online_read.reader_for`;
    ``direct=False``: always Feast's) says how the store is asked.

    Values keep the Arrow type Feast declares for the feature
    (``feast.types.from_feast_to_pyarrow_type``), except ``Json``, which stays the JSON
    text it is offline (the training set reads it from Parquet as text), so an on-demand
    view sees the same input on both paths.

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
        self,
        store: Any,
        feature_service: str,
        clock: Callable[[], float] = time.time,
        *,
        direct: bool = True,
    ) -> None:
        from framework.features.join_plan import join_plan

        self.store = store
        self.clock = clock
        self.plan = join_plan(store, feature_service, False)
        self.features = [r.split(":", 1)[1] for r in self.plan.refs]
        self.join_keys: list[str] = []
        #: Entity column -> Feast value type name (``INT64``, ``STRING``, ``BYTES``, ...).
        self.key_types: dict[str, str] = {}
        self._ttl_us: dict[str, int | None] = {}
        #: Column -> the Arrow type Feast declares for it (None: Arrow infers).
        self.types: dict[str, pa.DataType | None] = {}
        #: Features of type Json (read as their JSON text, as the offline source holds them).
        self.json_features: set[str] = set()
        for view, fv in zip(self.plan.views, self.plan.feature_views, strict=True):
            key_map = fv.projection.join_key_map or {}
            for column in fv.entity_columns:
                key = key_map.get(column.name, column.name)
                if key not in self.join_keys:
                    self.join_keys.append(key)
                    self.key_types[key] = column.dtype.to_value_type().name
                    self.types[key] = _arrow_type(column.dtype)
            ttl = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else None
            dtypes = {f.name: f.dtype for f in fv.features}
            for feature in view.features:
                self._ttl_us[feature] = ttl
                self.types[feature] = _arrow_type(dtypes[feature])
                if str(dtypes[feature]) == "Json":
                    self.json_features.add(feature)
        self._online_views = online_views(self.plan)
        self.reader = reader_for(store, self.plan, self.json_features, direct=direct)
        self.request_fields: dict[str, pa.DataType] = {}
        #: On-demand feature -> the Arrow type its view declares.
        self.declared: dict[str, pa.DataType | None] = {}
        for odfv in self.plan.odfvs:
            for field in odfv.source_request_sources.values():
                for f in field.schema:
                    self.request_fields[f.name] = _arrow_type(f.dtype)
                    self.types.setdefault(f.name, self.request_fields[f.name])
            for feature in odfv.features:
                self.declared[feature.name] = _arrow_type(feature.dtype)

    def close(self) -> None:
        """Close the store connections this view's reader opened (a later read reopens)."""
        self.reader.close()

    def bound_reads(self, seconds: float) -> bool:
        """Make the store itself give up a read after ``seconds``, where it can; returns
        whether it could.

        A local SQLite file can: a read waits only for a writer's lock, and its busy
        timeout bounds that wait (Feast opens the connection with Python's 5 s default).
        Network stores (Redis, PostgreSQL, ...) cannot promise it from here: their
        clients retry and wait on sockets, so a caller that must answer within a budget
        reads them on a thread it can stop waiting for.
        """
        return self.reader.bound_reads(seconds)

    def read(
        self, entity_rows: Sequence[dict[str, Any]], request_data: Sequence[dict[str, Any]]
    ) -> OnlineVectors:
        """Vectors for ``entity_rows`` (join keys) with ``request_data`` (one dict per row).

        Raises what the store raised when it cannot be read, and :class:`DataError`
        naming the feature when parity cannot take what it returned."""
        now_us = int(self.clock() * 1_000_000)
        n = len(entity_rows)
        columns: dict[str, list[Any]] = {
            key: [row.get(key) for row in entity_rows] for key in self.join_keys
        }
        status: dict[str, list[str]] = {}
        event_us: dict[str, list[int]] = {}
        raw = self.reader.read(entity_rows)
        ttls = self._ttl_us
        for name, col in raw.items():
            if name in columns:
                continue
            # A reader's lists are fresh for each read: judged in place.
            values, states, times = col.values, col.statuses, col.event_us
            ttl = ttls.get(name)
            oldest = _NO_TTL if ttl is None else now_us - ttl  # older: outside the TTL
            i = 0
            for label in states:
                if label == PRESENT:
                    if times[i] < oldest:
                        values[i] = None
                        states[i] = OUTSIDE_MAX_AGE
                    elif values[i] is None:
                        states[i] = NULL_VALUE
                        times[i] = 0
                else:
                    times[i] = 0
                i += 1
            columns[name], status[name], event_us[name] = values, states, times
        for field in self.request_fields:
            columns[field] = [row.get(field) for row in request_data]
        types = self.types
        if self.plan.odfvs:
            computed = self._on_demand(columns)
            columns.update(computed)
            types = dict(types)
            for name, values in computed.items():
                # Arrow infers an on-demand feature's type, as Feast's transform_arrow does,
                # except when every row is null (a new user, say): then the view's declared
                # type keeps one schema for clients and the prediction log.
                types[name] = self.declared.get(name) if all(v is None for v in values) else None
                if name in self.features:
                    status[name] = [COMPUTED] * n
                    event_us[name] = [0] * n
        return OnlineVectors(
            columns, features=self.features, status=status, event_time_us=event_us, types=types
        )

    def _on_demand(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        from framework.features import on_demand

        def arrow(name: str, values: list[Any]) -> pa.Array:
            return to_arrow(name, values, self.types.get(name))

        try:
            return on_demand.apply_columns(columns, self.types, arrow, self._online_views)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"An on-demand transformation failed: {exc}") from exc


def _arrow_type(dtype: Any) -> pa.DataType | None:
    """The Arrow type Feast gives a Feast type (None: Feast has none; Arrow infers)."""
    from feast.types import from_feast_to_pyarrow_type

    if str(dtype) == "Json":
        return pa.string()
    try:
        return from_feast_to_pyarrow_type(dtype)
    except (ValueError, AssertionError):
        return None


def is_outage(exc: BaseException) -> bool:
    """Whether a failed read means the online store was unreachable or too slow (the one
    case a prediction may fall back), rather than a failure of parity's own.

    Unreachable: a socket or OS error (refused, reset, timed out), a Redis connection,
    timeout or still-loading error, SQLite's locked, busy or unopenable database.
    Everything else — a value parity cannot take, an on-demand view that fails, a missing
    table — is not an outage and must not look like one.
    """
    import sqlite3
    from concurrent.futures import TimeoutError as FutureTimeout

    if isinstance(exc, OSError | FutureTimeout):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(w in text for w in ("locked", "busy", "unable to open", "disk i/o"))
    try:
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - redis is a dependency of feast[redis]
        return False
    return isinstance(
        exc,
        redis_errors.ConnectionError | redis_errors.TimeoutError | redis_errors.BusyLoadingError,
    )
