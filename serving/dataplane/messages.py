"""The data plane's request and answer types, and the checks a request's values pass.

A request names a model and carries rows of entity keys and request data
(:class:`PredictInput`), or, in plain model serving, the feature columns
themselves (:func:`provided_features`). Every value is checked against the
Feast type the version declares before anything reads the store or scores:
a client's mistake is :class:`InvalidInput`, naming the field, never a failure
deeper in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.models.explain import Explanation
from serving.dataplane.errors import InvalidInput
from serving.dataplane.versions import LoadedModel

# Python types a request value may have, per Feast value type name.
ACCEPTS: dict[str, tuple[type, ...]] = {
    "INT64": (int,),
    "INT32": (int,),
    "DOUBLE": (float, int),
    "FLOAT": (float, int),
    "STRING": (str,),
    "BOOL": (bool,),
    "BYTES": (bytes,),
    "UUID": (str,),
    "TIME_UUID": (str,),
}


@dataclass
class RowInput:
    entity_keys: dict[str, Any]
    request_data: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictInput:
    model_name: str
    rows: list[RowInput]
    version: str | None = None
    alias: str | None = None
    request_id: str = ""
    return_features: bool = False
    explain: bool = False


@dataclass
class PredictionOut:
    request_id: str
    row_index: int
    model_name: str
    model_version: str
    score: float
    label: str
    confidence: float
    decision: str
    reasons: list[str]
    features: dict[str, Any] | None = None
    explanation: Explanation | None = None


_INT_RANGE = {"INT64": 2**63, "INT32": 2**31}


def _inexact_number(value: Any) -> bool:
    """Infinite, or an integer a double cannot hold exactly (NaN is a missing value)."""
    if isinstance(value, float):
        return bool(np.isinf(value))
    return isinstance(value, int) and abs(value) > 2**53


def check_fields(where: str, given: dict[str, Any], wanted: dict[str, str], what: str) -> None:
    for name in wanted:
        if name not in given or given[name] is None:
            raise InvalidInput(f"{where}: missing {what} {name!r}.")
    for name, value in given.items():
        if name not in wanted:
            raise InvalidInput(
                f"{where}: unknown {what} {name!r} (the model takes: "
                f"{', '.join(wanted) or 'none'})."
            )
        kind = wanted[name]
        ok = isinstance(value, ACCEPTS.get(kind, (object,)))
        if isinstance(value, bool) and kind != "BOOL":
            ok = False
        if not ok:
            raise InvalidInput(
                f"{where}: {what} {name!r} must be {kind}, got {type(value).__name__} {value!r}."
            )
        if kind in ("DOUBLE", "FLOAT") and not np.isfinite(float(value)):
            raise InvalidInput(f"{where}: {what} {name!r} must be finite, got {value!r}.")
        if kind in _INT_RANGE and not -_INT_RANGE[kind] <= value < _INT_RANGE[kind]:
            raise InvalidInput(f"{where}: {what} {name!r}: {value} is outside the {kind} range.")
        if kind in ("DOUBLE", "FLOAT") and isinstance(value, int) and abs(value) > 2**53:
            raise InvalidInput(
                f"{where}: {what} {name!r}: the integer {value} has no exact {kind} value; "
                "send it as a double."
            )


def check_rows(loaded: LoadedModel, rows: Sequence[RowInput], max_rows: int) -> None:
    """Every row carries exactly the keys and request data the version needs."""
    if not rows:
        raise InvalidInput("rows: at least one row is required.")
    if len(rows) > max_rows:
        raise InvalidInput(f"rows: {len(rows)} rows exceed the limit of {max_rows}.")
    keys, req = loaded.key_types, loaded.request_types
    for i, row in enumerate(rows):
        check_fields(f"rows[{i}].entity_keys", row.entity_keys, keys, "entity key")
        check_fields(f"rows[{i}].request_data", row.request_data, req, "request field")


def provided_features(
    loaded: LoadedModel, ref: Any, columns: dict[str, list[Any]], max_rows: int
) -> dict[str, list[Any]]:
    """The feature columns a client supplies (plain model serving), checked: exactly the
    version's features, text for categorical ones, finite numbers else (as floats, what
    a float64 column holds); ``None`` is a missing value."""
    names = [f.name for f in loaded.fields]
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise InvalidInput(f"inputs: unknown feature {unknown[0]!r} for {ref}.")
    missing = [n for n in names if n not in columns]
    if missing:
        raise InvalidInput(f"inputs: missing feature {missing[0]!r} for {ref}.")
    n = len(columns[names[0]])
    if n == 0:
        raise InvalidInput("inputs: at least one row is required.")
    if n > max_rows:
        raise InvalidInput(f"inputs: {n} rows exceed the limit of {max_rows}.")
    out: dict[str, list[Any]] = {}
    for f in loaded.fields:
        values = columns[f.name]
        bad = next(
            (
                v
                for v in values
                if v is not None and (isinstance(v, str) != f.categorical or _inexact_number(v))
            ),
            None,
        )
        if bad is not None:
            want = "text (BYTES)" if f.categorical else "numbers (NaN: missing; finite)"
            raise InvalidInput(f"inputs[{f.name!r}]: must be {want}, got {bad!r}.")
        out[f.name] = values if f.categorical else [None if v is None else float(v) for v in values]
    return out
