"""What a direct online read reads per view, and how Feast turns stored rows into columns.

Shared by the direct readers (:mod:`framework.features.online_sqlite`,
:mod:`framework.features.online_redis`). It reproduces the parts of Feast 0.67's
``get_online_features`` that do not depend on the store (``feast/utils.py``):

- the entity rows' values of a view's join keys (the service's names, after
  ``with_join_key_map``) become one entity key per row, typed as Feast types them (the
  view's entity columns); duplicated rows are read once (``_get_unique_entities``);
- an entityless view is read under Feast's dummy key (``__dummy_id`` = ``""``);
- an entity the store does not hold gives ``NOT_FOUND`` and no event time for every
  feature; a found entity gives its stored values (``PRESENT``, a stored null is the
  value ``None``), ``NOT_FOUND`` for a feature its row lacks, and the row's event time
  for all of them (``_populate_response_from_feature_data``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from framework.features.online_keys import KeyEncoder
from framework.features.online_values import decode, decode_json

#: Feast's dummy join key and value for entityless views (``feast.feature_view``).
DUMMY_KEY, DUMMY_VALUE = "__dummy_id", ""

#: A column as a reader gives it: values, statuses, event times (µs).
Triple = tuple[list[Any], list[str], list[int]]


@dataclass
class ViewRead:
    """One feature-view projection of the service, as a direct read reads it."""

    name: str  #: the view's own name (Feast keys its storage by it)
    view: Any  #: the Feast FeatureView projection
    features: list[str]
    decoders: list[Callable[[Any], Any]]
    row_keys: list[str]  #: the entity-row columns of its join keys (service names)
    encoder: KeyEncoder
    #: Views with equal ``key_id`` key every entity row alike (same columns, same encoding).
    key_id: tuple[Any, ...] = ()

    def keys(self, entity_rows: Sequence[dict[str, Any]]) -> tuple[list[bytes], list[int]]:
        """The distinct entity keys of ``entity_rows`` (first seen first) and, per row,
        the position of its key among them."""
        if not self.row_keys:
            (key,) = self.encoder.encode([[DUMMY_VALUE]])
            return [key], [0] * len(entity_rows)
        names = self.row_keys
        encoded = self.encoder.encode([[row[k] for k in names] for row in entity_rows])
        where: dict[bytes, int] = {}
        index = [where.setdefault(key, len(where)) for key in encoded]
        return list(where), index

    def columns(
        self, found: Sequence[tuple[int, dict[str, Any]] | None], index: list[int]
    ) -> dict[str, Triple]:
        """Each feature's column for the rows, from what the store held per distinct key:
        ``None`` (not found) or (event time µs, stored bytes per feature name)."""
        out: dict[str, Triple] = {}
        # Rows with distinct keys (the usual request): ``index`` is 0, 1, 2, ... and the
        # columns are the distinct keys' own, with nothing to pick.
        distinct = len(index) == len(found)
        for feature, to_python in zip(self.features, self.decoders, strict=True):
            values: list[Any] = []
            statuses: list[str] = []
            times: list[int] = []
            for entry in found:
                if entry is None:
                    values.append(None)
                    statuses.append("NOT_FOUND")
                    times.append(0)
                    continue
                stored = entry[1]
                if feature in stored:
                    values.append(to_python(stored[feature]))
                    statuses.append("PRESENT")
                else:
                    values.append(None)
                    statuses.append("NOT_FOUND")
                times.append(entry[0])
            if not distinct:
                values = [values[i] for i in index]
                statuses = [statuses[i] for i in index]
                times = [times[i] for i in index]
            out[feature] = (values, statuses, times)
        return out


def keys_of(
    views: Sequence[ViewRead], entity_rows: Sequence[dict[str, Any]]
) -> list[tuple[list[bytes], list[int]]]:
    """:meth:`ViewRead.keys` of each view, encoded once per distinct ``key_id`` (a
    service's views mostly share their entity: the sample's six views, two keys)."""
    done: dict[tuple[Any, ...], tuple[list[bytes], list[int]]] = {}
    out = []
    for view in views:
        keyed = done.get(view.key_id)
        if keyed is None:
            keyed = done[view.key_id] = view.keys(entity_rows)
        out.append(keyed)
    return out


def view_reads(store: Any, plan: Any, json_features: set[str]) -> list[ViewRead] | str:
    """The plan's views as direct reads, or why a direct read cannot give exactly what
    Feast gives (then the caller reads through Feast)."""
    config = store.config
    if getattr(config.registry, "enable_online_feature_view_versioning", False):
        # Feast names versioned views' storage by the version the registry holds at
        # read time; FeastReader asks it.
        return "online feature view versioning is enabled"
    version = int(config.entity_key_serialization_version)
    reads: list[ViewRead] = []
    types: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for view, fv in zip(plan.views, plan.feature_views, strict=True):
        key_map = dict(fv.projection.join_key_map or {})
        columns = {c.name: c.dtype.to_value_type().name for c in fv.entity_columns}
        # One get_online_features call per join-key map: Feast types each key once for
        # the call, by the last view declaring it; views that disagree read via Feast.
        call_types = types.setdefault(tuple(sorted(key_map.items())), {})
        for name, kind in columns.items():
            if call_types.setdefault(name, kind) != kind:
                return f"join key {name!r} has types {call_types[name]} and {kind}"
        entityless = not columns or list(fv.entities) == ["__dummy"]
        if entityless:
            columns = {DUMMY_KEY: "STRING"}
        try:
            encoder = KeyEncoder(list(columns), list(columns.values()), version)
        except ValueError as exc:
            return str(exc)
        row_keys = [] if entityless else [key_map.get(c, c) for c in columns]
        reads.append(
            ViewRead(
                name=fv.name,
                view=fv,
                features=list(view.features),
                decoders=[decode_json if f in json_features else decode for f in view.features],
                row_keys=row_keys,
                encoder=encoder,
                key_id=(tuple(row_keys), tuple(columns.items()), version),
            )
        )
    if any(not r.row_keys for r in reads) and not types.get((), {}):
        # Entityless views in a call without join keys: Feast gets entity rows without
        # columns and fails counting them; FeastReader reproduces that failure.
        return "entityless views asked for without join keys"
    return reads
