"""A model's input as NumPy columns, made from Python values without pandas.

:func:`framework.models.estimator.feature_frame` turns an Arrow table into the
pandas frame a scikit-learn pipeline takes. Building that frame costs about a
millisecond, most of a served request's work once the lookup is direct, so the
server hands the compiled model (:mod:`framework.models.compiled`) the same
columns as NumPy arrays: :class:`FeatureColumns`. Its :meth:`~FeatureColumns.frame`
is the pandas frame ``feature_frame`` would have made, for scikit-learn itself
(a version that is not compiled, explanations).

The columns are ``feature_frame``'s to the value: numbers (Bool as 0/1) as
float64, strings as objects, every missing value NaN. Values of the Python type
Arrow gives for the feature's Feast type are converted directly; anything else
goes through the same Arrow casts ``feature_frame`` makes, so a value the model
cannot take fails the same way, as a :class:`~framework.errors.DataError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from framework.errors import DataError
from framework.features.fields import FeatureField

#: Arrow refuses to cast an integer beyond this to float64 (it would round): such values
#: take the Arrow path and fail as feature_frame fails.
_EXACT_INT = 2**53
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class FeatureColumns:
    """The model's input: one NumPy array per feature, in the model's order."""

    __slots__ = ("columns", "rows", "_frame")

    def __init__(self, columns: dict[str, np.ndarray], rows: int) -> None:
        self.columns = columns
        self.rows = rows
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self.rows

    def column(self, name: str) -> np.ndarray:
        return self.columns[name]

    def frame(self) -> pd.DataFrame:
        """The same input as the pandas frame ``feature_frame`` makes (built once)."""
        if self._frame is None:
            self._frame = pd.DataFrame(self.columns)
        return self._frame

    def slice(self, start: int, rows: int) -> FeatureColumns:
        return FeatureColumns(
            {k: v[start : start + rows] for k, v in self.columns.items()}, min(rows, self.rows)
        )

    @staticmethod
    def concat(parts: Sequence[FeatureColumns]) -> FeatureColumns:
        if len(parts) == 1:
            return parts[0]
        names = list(parts[0].columns)
        return FeatureColumns(
            {n: np.concatenate([p.columns[n] for p in parts]) for n in names},
            sum(p.rows for p in parts),
        )


def feature_columns(
    fields: list[FeatureField],
    values: Callable[[str], list[Any]],
    arrow: Callable[[str], pa.Array],
    rows: int,
) -> FeatureColumns:
    """The model's input from each feature's Python ``values``; ``arrow(name)`` is the
    feature's column as its declared Arrow type (used only for values of other types)."""
    columns: dict[str, np.ndarray] = {}
    for f in fields:
        column = values(f.name)
        plain = _PLAIN.get(f.dtype)
        if plain is not None and all(v is None or plain(v) for v in column):
            if f.categorical:
                columns[f.name] = np.array(
                    [math.nan if v is None else v for v in column], dtype=object
                )
            else:
                numbers = np.array([math.nan if v is None else v for v in column], np.float64)
                if f.dtype == "Float32":  # what Arrow's float32 column holds
                    numbers = numbers.astype(np.float32).astype(np.float64)
                columns[f.name] = numbers
        else:
            columns[f.name] = _through_arrow(f, arrow)
    return FeatureColumns(columns, rows)


def supplied_columns(
    fields: list[FeatureField], columns: dict[str, list[Any]], rows: int
) -> FeatureColumns:
    """The model's input from values a client supplied, already checked (text or None
    for categorical features, floats or None for the others): ``feature_frame`` of the
    string and float64 columns they make."""
    out: dict[str, np.ndarray] = {}
    for f in fields:
        column = [math.nan if v is None else v for v in columns[f.name]]
        out[f.name] = np.array(column, dtype=object if f.categorical else np.float64)
    return FeatureColumns(out, rows)


def _through_arrow(f: FeatureField, arrow: Callable[[str], pa.Array]) -> np.ndarray:
    """``feature_frame``'s conversion of the column; what it cannot convert is a
    :class:`DataError` naming the feature."""
    column = arrow(f.name)
    try:
        if f.categorical:
            return _categorical(column)
        return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"The feature {f.name!r} ({f.dtype}) cannot be given to the model: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from exc


def _int_within(bits: int) -> Callable[[Any], bool]:
    low, high = max(-(2 ** (bits - 1)), -_EXACT_INT), min(2 ** (bits - 1) - 1, _EXACT_INT)
    return lambda v: type(v) is int and low <= v <= high


#: Per Feast type, the values converted directly: exactly the Python type Arrow gives
#: back for the type's column, within what the column and a float64 hold exactly.
_PLAIN: dict[str, Callable[[Any], bool]] = {
    "Float64": lambda v: type(v) is float,
    "Float32": lambda v: type(v) is float and (abs(v) <= _FLOAT32_MAX or not math.isfinite(v)),
    "Int64": _int_within(64),
    "Int32": _int_within(32),
    "Bool": lambda v: type(v) is bool,
    "String": lambda v: type(v) is str,
}


def _categorical(column: pa.Array) -> np.ndarray:
    """``feature_frame``'s conversion of a text column."""
    out = np.array(column.cast(pa.string()).to_pylist(), dtype=object)
    out[pd.isna(out)] = np.nan
    return out


def as_frame(x: Any) -> Any:
    """A pandas frame for scikit-learn: ``x`` itself unless it is :class:`FeatureColumns`."""
    return x.frame() if isinstance(x, FeatureColumns) else x
