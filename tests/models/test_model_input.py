"""The server's model input (FeatureColumns) equals the pandas frame scikit-learn is
trained and batch-scored on (``feature_frame``), value for value; what the frame cannot
hold the columns refuse too, naming the feature."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import DataError
from framework.features.fields import FeatureField
from framework.features.online import to_arrow
from framework.models.estimator import feature_frame
from framework.models.model_input import FeatureColumns, feature_columns, supplied_columns

FIELDS = [
    FeatureField("f64", "Float64", "v"),
    FeatureField("f32", "Float32", "v"),
    FeatureField("i64", "Int64", "v"),
    FeatureField("i32", "Int32", "v"),
    FeatureField("flag", "Bool", "v"),
    FeatureField("text", "String", "v"),
]
TYPES = {
    "f64": pa.float64(),
    "f32": pa.float32(),
    "i64": pa.int64(),
    "i32": pa.int32(),
    "flag": pa.bool_(),
    "text": pa.string(),
}
# What a reader gives for each type, and values of other types a store could hold.
EXPECTED = {
    "f64": st.floats(allow_nan=False),
    "f32": st.floats(width=32, allow_nan=False),
    "i64": st.integers(-(2**63), 2**63 - 1),
    "i32": st.integers(-(2**31), 2**31 - 1),
    "flag": st.booleans(),
    "text": st.text(max_size=5),
}
ODD = st.one_of(st.integers(-(2**60), 2**60), st.floats(), st.booleans(), st.text(max_size=3))


def _column(name: str) -> st.SearchStrategy[list[Any]]:
    value = st.one_of(st.none(), EXPECTED[name], EXPECTED[name], ODD)
    return st.lists(value, min_size=3, max_size=3)


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    for g, w in zip(got.tolist(), want.tolist(), strict=True):
        both_missing = (
            isinstance(g, float) and isinstance(w, float) and math.isnan(g) and math.isnan(w)
        )
        if not both_missing and (type(g) is not type(w) or g != w):
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({f.name: _column(f.name) for f in FIELDS}))
def test_feature_columns_equal_feature_frame(values: dict[str, list[Any]]) -> None:
    """Missing values, ints beyond 2**53, bools, floats where ints are declared, text
    where numbers are: the same arrays as the frame, or the same kind of failure."""

    def arrow(name: str) -> pa.Array:
        return to_arrow(name, values[name], TYPES[name])

    try:
        want = feature_frame(pa.table({f.name: arrow(f.name) for f in FIELDS}), FIELDS)
    except (DataError, pa.ArrowInvalid):
        # The frame cannot be made: nor can the columns, and the error names a feature.
        with pytest.raises(DataError, match="'(f64|f32|i64|i32|flag|text)'"):
            feature_columns(FIELDS, values.__getitem__, arrow, 3)
        return
    got = feature_columns(FIELDS, values.__getitem__, arrow, 3)
    for f in FIELDS:
        assert _same(got.column(f.name), want[f.name].to_numpy()), f.name
    assert got.frame().equals(want)


SUPPLIED = [FeatureField("x", "Float32", "v"), FeatureField("n", "Int64", "v"),
            FeatureField("t", "String", "v")]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 4).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                "x": st.lists(st.none() | st.floats(allow_infinity=False), min_size=n, max_size=n),
                "n": st.lists(st.none() | st.floats(-1e18, 1e18), min_size=n, max_size=n),
                "t": st.lists(st.none() | st.text(max_size=3), min_size=n, max_size=n),
            }
        )
    )
)
def test_supplied_columns_equal_the_frame_of_the_columns_a_client_sends(
    values: dict[str, list[Any]],
) -> None:
    """V2 (features supplied): floats and text as checked, into the frame of the float64
    and string table they make, whatever type the feature has online (no float32
    rounding: the client sent float64s)."""
    n = len(values["x"])
    table = pa.table({"x": pa.array(values["x"], pa.float64()),
                      "n": pa.array(values["n"], pa.float64()),
                      "t": pa.array(values["t"], pa.string())})  # fmt: skip
    want = feature_frame(table, SUPPLIED)
    got = supplied_columns(SUPPLIED, values, n)
    for f in SUPPLIED:
        assert _same(got.column(f.name), want[f.name].to_numpy()), f.name
    assert got.frame().equals(want)


def test_concat_and_slice_keep_rows_in_order() -> None:
    a = FeatureColumns({"x": np.array([1.0, 2.0]), "t": np.array(["a", "b"], object)}, 2)
    b = FeatureColumns({"x": np.array([3.0]), "t": np.array(["c"], object)}, 1)
    merged = FeatureColumns.concat([a, b])
    assert merged.rows == 3 and merged.column("x").tolist() == [1.0, 2.0, 3.0]
    part = merged.slice(1, 2)
    assert part.rows == 2 and part.column("t").tolist() == ["b", "c"]
