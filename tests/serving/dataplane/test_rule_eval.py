"""Serving rules without pandas: the same answer as ``DataFrame.eval`` on the row, or
the row is handed to pandas (never a different answer)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from serving.dataplane.rule_eval import NotCompiled, compile_rule

NUMBERS = ("amount", "count")
TEXTS = ("country", "home")
FLAGS = ("night",)

number = st.one_of(
    st.none(),
    st.floats(-1e6, 1e6),
    st.just(math.nan),
    st.integers(-1000, 1000),
    st.integers(2**53 - 2, 2**60),
)
text = st.one_of(st.none(), st.sampled_from(["US", "GB", "", "us"]))
rows = st.fixed_dictionaries(
    {
        **{n: number for n in NUMBERS},
        **{t: text for t in TEXTS},
        "night": st.one_of(st.none(), st.booleans()),
    }
)


def _operand(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        st.sampled_from([*NUMBERS, *TEXTS, *FLAGS]),
        st.integers(-600, 600).map(str),
        st.floats(-600, 600, allow_nan=False).map(lambda f: repr(round(f, 2))),
        st.sampled_from(["'US'", "'GB'", '""']),
    )
    if depth == 0:
        return leaf
    inner = _operand(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"({' '.join(t)})"),
        inner.map(lambda e: f"-{e}"),
    )


def _condition(depth: int) -> st.SearchStrategy[str]:
    ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    compare = st.one_of(
        st.tuples(_operand(1), ops, _operand(1)).map(" ".join),
        st.tuples(_operand(0), ops, _operand(0), ops, _operand(0)).map(" ".join),
    )
    if depth == 0:
        return compare
    inner = _condition(depth - 1)
    return st.one_of(
        compare,
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({' '.join(t)})"),
        inner.map(lambda e: f"not ({e})"),
    )


def _pandas(expression: str, row: dict[str, Any]) -> bool:
    frame = pd.DataFrame([{k: (math.nan if v is None else v) for k, v in row.items()}])
    return bool(np.asarray(frame.eval(expression, engine="python")).reshape(-1)[0])


@settings(max_examples=600, deadline=None)
@given(expression=_condition(2), row=rows)
def test_a_compiled_rule_answers_as_pandas_or_hands_the_row_to_pandas(
    expression: str, row: dict[str, Any]
) -> None:
    compiled = compile_rule(expression)
    # Only a comparison of two constants is left to pandas ('US' == 'US' is False there).
    assume(compiled is not None)
    assert compiled is not None
    try:
        want: bool | None = _pandas(expression, row)
    except Exception:
        want = None  # pandas refuses: the compiled rule must not answer
    try:
        got: bool | None = compiled(row)
    except NotCompiled:
        return  # pandas judges this row: its answer, by definition
    assert want is not None, f"pandas refuses {expression!r} on {row}, compiled gave {got}"
    assert got == want, f"{expression!r} on {row}: compiled {got}, pandas {want}"


@pytest.mark.parametrize(
    "expression",
    ["amount > 500 and country != home_country", "txn_count_1h >= 3", "-amount < 2 * count"],
)
def test_the_shipped_kind_of_rule_compiles_and_answers_plain_rows(expression: str) -> None:
    compiled = compile_rule(expression)
    assert compiled is not None
    row = {"amount": 900.0, "count": 2, "country": "US", "home_country": "GB",
           "txn_count_1h": 4}  # fmt: skip
    assert compiled(row) == _pandas(expression, row)


@pytest.mark.parametrize(
    "expression",
    [
        "amount / count > 2",  # division: pandas' inf and NaN rules
        "abs(amount) > 2",  # a function
        "country in ['US', 'GB']",  # membership
        "amount > @limit",  # a local
        "`odd name` > 1",  # a backtick-quoted name
        "amount > inf",  # pandas' globals
        "amount",  # not a condition
        "'US' == 'US'",  # two constants: pandas says False
    ],
)
def test_expressions_outside_the_subset_stay_with_pandas(expression: str) -> None:
    assert compile_rule(expression) is None
