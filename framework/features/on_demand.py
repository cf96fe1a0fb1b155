"""On-demand feature views over a joined table: Feast's own transformation code.

The training-set builder (:mod:`framework.features.training_set`) and the online read
(:mod:`framework.features.online`) both append on-demand features with
:func:`apply` — ``OnDemandFeatureView.transform_arrow``, the call Feast's
``RetrievalJob.to_arrow`` makes — so the two paths compute them alike. Large
tables go through :func:`apply_in_batches`; a streamed Parquet file keeps one
schema with :func:`declared_types` and :func:`as_schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from framework.errors import DataError

if TYPE_CHECKING:
    from framework.features.view_sources import View


class Plan(Protocol):
    """What these functions read of a training-set plan."""

    refs: list[str]
    views: list[View]
    odfvs: list[Any]


def _input_names(odfv: Any, plan: Plan) -> set[str]:
    """The columns an on-demand view declares it reads: join keys, request data, sources.

    Feast's python-mode transformation turns its whole input table into Python
    lists; handing it only these columns (not every feature of the service, and
    not the entity timestamps, which become slow datetime objects) gives the
    same result several times faster.
    """
    wanted = set(odfv.get_request_data_schema())
    for projection in odfv.source_feature_view_projections.values():
        for feature in projection.features:
            wanted.add(feature.name)
            wanted.add(f"{projection.name}__{feature.name}")
            wanted.add(f"{projection.name_to_use()}__{feature.name}")
    for view in plan.views:
        wanted.update(view.join_keys.values())
    return wanted


def _inputs(table: pa.Table, odfv: Any, plan: Plan) -> pa.Table:
    wanted = _input_names(odfv, plan)
    return table.select([c for c in table.column_names if c in wanted])


def _requested(odfv: Any, plan: Plan, full_feature_names: bool) -> set[str]:
    name = odfv.projection.name_to_use()
    return {
        (f"{name}__{r.split(':', 1)[1]}" if full_feature_names else r.split(":", 1)[1])
        for r in plan.refs
        if r.split(":", 1)[0] in (odfv.name, name)
    }


def apply(table: pa.Table, plan: Plan, full_feature_names: bool) -> pa.Table:
    """Append on-demand features exactly as Feast's RetrievalJob.to_arrow does."""
    for odfv in plan.odfvs:
        requested = _requested(odfv, plan, full_feature_names)
        transformed = odfv.transform_arrow(_inputs(table, odfv, plan), full_feature_names)
        for col in transformed.column_names:
            if not col.startswith("__index") and col in requested:
                table = table.append_column(col, transformed[col])
    return table


@dataclass(frozen=True)
class OnlineView:
    """An on-demand view as an online read runs it: the columns it reads (see
    :func:`_input_names`) and the features the service asks of it, worked out once."""

    odfv: Any
    reads: frozenset[str]
    requested: frozenset[str]


def online_views(plan: Plan) -> list[OnlineView]:
    return [
        OnlineView(
            odfv, frozenset(_input_names(odfv, plan)), frozenset(_requested(odfv, plan, False))
        )
        for odfv in plan.odfvs
    ]


def apply_columns(
    columns: dict[str, list[Any]],
    types: dict[str, pa.DataType | None],
    arrow: Callable[[str, list[Any]], pa.Array],
    views: list[OnlineView],
) -> dict[str, list[Any]]:
    """On-demand features of an online read, from its Python columns (short names).

    A python-mode view (not singleton) runs its UDF on lists through Feast's
    ``PythonTransformation.transform``: what Feast's own online read does
    (``transform_dict``) and what ``transform_arrow`` does after ``to_pydict`` (the same
    UDF on the same values: inputs are first made the Python values Arrow would give for
    their ``types``, ``arrow(name, values)``). Any
    other mode runs through ``transform_arrow`` on an Arrow table of its inputs, as in
    :func:`apply`. Returns the new columns; a later view sees the earlier views' outputs.
    """
    columns = dict(columns)
    out: dict[str, list[Any]] = {}
    for view in views:
        odfv, requested = view.odfv, view.requested
        names = [c for c in columns if c in view.reads]
        if odfv.mode == "python" and not odfv.singleton:
            inputs = {c: _as_arrow_gives(c, columns[c], types.get(c), arrow) for c in names}
            result = odfv.feature_transformation.transform(_with_full_names(inputs, odfv))
            produced = {c: list(result[c]) for c in requested if c in result}
        else:
            table = pa.table({c: arrow(c, columns[c]) for c in names})
            transformed = odfv.transform_arrow(table, False)
            produced = {
                c: transformed[c].to_pylist()
                for c in transformed.column_names
                if c in requested and not c.startswith("__index")
            }
        columns.update(produced)
        out.update(produced)
    return out


def _with_full_names(inputs: dict[str, list[Any]], odfv: Any) -> dict[str, list[Any]]:
    """``inputs`` with each source feature also under ``<view>__<feature>``, as
    ``OnDemandFeatureView.transform_dict`` prepares them (``_preprocess_feature_dict``).

    Done here rather than through ``transform_dict``: Feast wraps every method of
    ``OnDemandFeatureView`` in typeguard's ``@typechecked``, which costs more than the
    transformation itself on one request. A UDF reading names prepared otherwise would
    differ from training, which the conformance suite's on-demand shapes compare."""
    out = dict(inputs)
    for projection in odfv.source_feature_view_projections.values():
        for feature in projection.features:
            full = f"{projection.name}__{feature.name}"
            if full in inputs:
                out[feature.name] = inputs[full]
            elif feature.name in inputs:
                out[full] = inputs[feature.name]
    return out


#: Python types Arrow gives back (``to_pylist``) for a column of each kind of type.
_ARROW_PYTHON: list[tuple[Callable[[pa.DataType], bool], type]] = [
    (pa.types.is_floating, float),
    (pa.types.is_boolean, bool),
    (pa.types.is_integer, int),
    (pa.types.is_string, str),
]


def _as_arrow_gives(
    name: str,
    values: list[Any],
    kind: pa.DataType | None,
    arrow: Callable[[str, list[Any]], pa.Array],
) -> list[Any]:
    """``values`` as ``arrow(name, values).to_pylist()`` gives them: as they are when each
    is already that Python type (the common case, no Arrow round trip), else through
    Arrow (an int for a float column becomes a float; a bad value is Arrow's error)."""
    for test, python in _ARROW_PYTHON:
        if kind is not None and test(kind):
            if all(v is None or type(v) is python for v in values):
                return values
            break
    return list(arrow(name, values).to_pylist())


def apply_in_batches(
    table: pa.Table, plan: Plan, full_feature_names: bool, batch_rows: int
) -> pa.Table:
    """:func:`apply` ``batch_rows`` rows at a time, as the streamed
    path does: a python-mode transformation turns its input into Python objects, and
    doing that for a million rows at once costs more memory than the whole join.
    Transformations are row-wise (the online path runs them on single requests);
    column types inferred per batch are promoted as one whole-table inference would
    (an all-null batch, ints in one batch and floats in another)."""
    if not plan.odfvs:
        return table
    parts = [
        apply(pa.Table.from_batches([batch]), plan, full_feature_names)
        for batch in table.to_batches(max_chunksize=batch_rows)
    ]
    return pa.concat_tables(parts, promote_options="permissive")


def declared_types(schema: pa.Schema, plan: Plan) -> pa.Schema:
    """``schema``, except that an on-demand feature inferred as all-null gets the type its
    view declares (a streamed file's first batch; an online read of new entities)."""
    from feast.types import from_feast_to_pyarrow_type

    declared: dict[str, pa.DataType] = {}
    for odfv in plan.odfvs:
        for feature in odfv.features:
            kind = from_feast_to_pyarrow_type(feature.dtype)
            declared[feature.name] = declared[
                f"{odfv.projection.name_to_use()}__{feature.name}"
            ] = kind
    for i, f in enumerate(schema):
        if pa.types.is_null(f.type) and f.name in declared:
            schema = schema.set(i, f.with_type(declared[f.name]))
    return schema


def as_schema(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """A later batch in the file's schema (its on-demand features may have inferred
    other types: all nulls, or ints where the first batch had floats)."""
    if part.schema.equals(schema):
        return part
    columns = []
    for column, target in zip(part.columns, schema, strict=True):
        try:
            columns.append(column.cast(target.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"The on-demand feature {target.name!r} is {column.type} in one batch and "
                f"{target.type} in an earlier one, and cannot be converted: {exc}"
            ) from exc
    return pa.Table.from_arrays(columns, schema=schema)
