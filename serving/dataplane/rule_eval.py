"""A serving rule's pandas expression evaluated on one row without pandas.

A rule (``amount > 500 and country != home_country``) is a pandas expression,
defined by ``DataFrame.eval``; evaluating one on a one-row frame costs pandas
about 15 ms (it builds a column resolver for every column of the row), which a
request that reaches the rules pays in full. Most rules are comparisons of
columns with constants joined by ``and``/``or``/``not``; for those,
:func:`compile_rule` returns a Python function that computes the same value on
the row's scalars. On one row, pandas' element-wise operators are the scalar
ones: a comparison with NaN (a missing value) is False except ``!=``, ``&`` and
``|`` of booleans are ``and`` and ``or``, and a comparison of text with a
number fails in both. Anything outside that subset — function calls,
division, ``in``, ``@`` names, backtick-quoted names, attribute access — gets
``None`` here, and the caller keeps pandas' ``eval`` for that rule; a row whose
values fall outside it (a huge integer, text in arithmetic, a comparison pandas
refuses with its own message) raises :class:`NotCompiled`, and pandas judges it.

Written by hand (Python's ``ast``, no ``eval`` of the text): no library
evaluates pandas' expression language outside pandas; the subset's equality
with ``DataFrame.eval`` is a Hypothesis property in
``tests/serving/dataplane/test_rule_eval.py``.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
_EXACT_INT = 2**53
Value = Callable[[Row], Any]

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}


class _Unsupported(Exception):
    """Outside the subset: pandas evaluates this rule."""


class NotCompiled(Exception):
    """This row is pandas' to judge (a value outside the subset: a huge integer, text in
    arithmetic, a comparison pandas would refuse with its own message)."""


def compile_rule(expression: str) -> Callable[[Row], bool] | None:
    """``expression`` as a function of a row (missing values as NaN), or None when it is
    outside the subset this module evaluates exactly as ``DataFrame.eval`` does."""
    if "`" in expression or "@" in expression:
        return None
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        test = _condition(tree.body)
    except (SyntaxError, _Unsupported):
        return None

    def rule(row: Row) -> bool:
        try:
            return bool(test(row))
        except (_Unsupported, TypeError) as exc:
            raise NotCompiled(str(exc)) from exc

    return rule


def _condition(node: ast.expr) -> Value:
    """A boolean: a comparison, or ``and``/``or``/``not`` of booleans."""
    if isinstance(node, ast.BoolOp):
        parts = [_condition(v) for v in node.values]
        # Every part evaluated, as pandas' element-wise & and | do (a part that fails
        # fails the rule even when an earlier part already decided it).
        if isinstance(node.op, ast.And):
            return lambda row: all([p(row) for p in parts])
        return lambda row: any([p(row) for p in parts])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _condition(node.operand)
        return lambda row: not inner(row)
    if isinstance(node, ast.Compare):
        return _comparison(node)
    raise _Unsupported(ast.dump(node))


def _comparison(node: ast.Compare) -> Value:
    """``a < b <= c``: every link holds (pandas joins the links with ``&``)."""
    nodes = [node.left, *node.comparators]
    for left, right in zip(nodes, nodes[1:], strict=False):
        if not (_reads_a_column(left) or _reads_a_column(right)):
            # pandas compares two constants by its own rules ('US' == 'US' is False)
            raise _Unsupported("a comparison of two constants")
    operands = [_value(n) for n in nodes]
    ops = []
    for op in node.ops:
        if type(op) not in _COMPARE:
            raise _Unsupported(type(op).__name__)
        ops.append(_COMPARE[type(op)])

    def compare(row: Row) -> bool:
        values = [operand(row) for operand in operands]
        results = [op(values[i], values[i + 1]) for i, op in enumerate(ops)]
        return all(results)  # every link evaluated, as pandas does element-wise

    return compare


def _reads_a_column(node: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) for n in ast.walk(node))


def _value(node: ast.expr) -> Value:
    """A number or text: a column, a constant, ``-x``, or ``+``/``-``/``*`` of numbers."""
    if isinstance(node, ast.Name):
        name = node.id
        if name in ("inf", "nan", "True", "False", "None"):
            raise _Unsupported(name)  # pandas' globals: left to pandas
        return lambda row: _cell(row, name)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, str):
        constant = node.value
        if isinstance(constant, float) and not math.isfinite(constant):
            raise _Unsupported(repr(constant))
        return lambda row: constant
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _value(node.operand)
        return lambda row: -_number(inner(row))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right, op = _value(node.left), _value(node.right), _ARITHMETIC[type(node.op)]
        return lambda row: op(_number(left(row)), _number(right(row)))
    raise _Unsupported(ast.dump(node))


def _cell(row: Row, name: str) -> Any:
    if name not in row:
        raise _Unsupported(f"no column {name!r}")  # pandas' UndefinedVariableError, worded
    value = row[name]
    if value is None:
        return math.nan
    kind = type(value)
    if kind is bool or kind is float or kind is str:
        return value
    if kind is int and -_EXACT_INT <= value <= _EXACT_INT:
        return float(value)  # an int64 column compares as float64
    raise _Unsupported(kind.__name__)


def _number(value: Any) -> float:
    """Arithmetic only on numbers (text arithmetic is pandas' to define)."""
    if type(value) is bool or not isinstance(value, int | float):
        raise _Unsupported(type(value).__name__)
    return float(value)
