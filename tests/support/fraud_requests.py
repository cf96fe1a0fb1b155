"""Requests to the sample's ``fraud_model``: rows of recent transactions, as plain data
and as parity's protobuf ``Row``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.stubs.parity.v1 import prediction_pb2 as pb
    from tests.support.workspaces import Served, Workspace

#: Request-data fields of ``fraud_model`` (every other field is an entity key), and one
#: field no version takes.
REQUEST_FIELDS = ("amount", "hour_of_day", "colour")


def recent_rows(served: Served | Workspace, n: int) -> list[dict[str, Any]]:
    """Entity keys and request data of the ``n`` latest transactions (distinct users)."""
    import duckdb

    workspace = getattr(served, "workspace", served)
    path = workspace.data / "raw" / "transactions.parquet"
    rows = duckdb.sql(
        f"""SELECT user_id, merchant_id, amount,
                   hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day
            FROM '{path}' QUALIFY row_number() OVER (PARTITION BY user_id
                 ORDER BY transaction_timestamp DESC) = 1
            ORDER BY max(transaction_timestamp) OVER (PARTITION BY user_id) DESC LIMIT {n}"""
    ).fetchall()
    return [
        {
            "entity_keys": {"user_id": u, "merchant_id": m},
            "request_data": {"amount": a, "hour_of_day": h},
        }
        for u, m, a, h in rows
    ]


def proto_row(**fields: Any) -> pb.Row:
    """A protobuf ``Row``: ``REQUEST_FIELDS`` go to request data, the rest to entity keys;
    each value typed by its Python type (str, float, else int)."""
    from serving.stubs.parity.v1 import prediction_pb2 as pb

    row = pb.Row()
    for k, v in fields.items():
        target = row.request_data if k in REQUEST_FIELDS else row.entity_keys
        if isinstance(v, str):
            target[k].string_value = v
        elif isinstance(v, float):
            target[k].double_value = v
        else:
            target[k].int64_value = v
    return row


def feature_tensors(
    info: dict[str, Any], answers: list[dict[str, Any]]
) -> dict[str, tuple[str, list[Any]]]:
    """Every feature of the model (``info``: parity's model info) as a tensor of the served
    ``answers``' feature values, for plain model serving: strings as BYTES, numbers as FP64
    (a missing number as NaN)."""
    tensors: dict[str, tuple[str, list[Any]]] = {}
    for f in info["features"]:
        values = [a["features"][f["name"]] for a in answers]
        if f["dtype"] == "String":
            tensors[f["name"]] = ("BYTES", values)
        else:
            tensors[f["name"]] = ("FP64", [float("nan") if v is None else v for v in values])
    return tensors
