"""Failed prediction requests: how they are logged and how their rates are read.

A request the server answers with an error produces no prediction, so it never
reaches the prediction log. The server logs it here instead, beside the
predictions, written by the same durable writer
(``serving.log.writer.PredictionLog``: whole files, bounded memory)::

    <predictions>/_errors/model=requests/date=<YYYY-MM-DD>/part-<unique>.parquet

One row per failed ``Predict`` or ``ModelInfer`` call: the request id, the
RPC, the model name, version or alias the client asked for (as given; it may
name no model the server knows), the gRPC status code, its message and the
seconds the call took. ``__timestamp`` is the server's clock when the call
arrived — the clock prediction rows use (``--now`` replays move both) — so
``parity monitor``'s window selects errors and predictions alike.

:func:`error_summary` counts them for one model against the requests that
succeeded. Codes are split into the server's own failures
(:data:`SERVER_CODES`: the service could not answer) and the client's mistakes
(everything else: bad input, unknown model, a precondition), because they call
for different people.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from framework.logs import layout

ERRORS_DIR = "_errors"
#: The single ``model=`` partition of the error log: rows name the requested model themselves.
PARTITION = "requests"
#: Codes meaning the service failed (the rest are the client's mistakes).
SERVER_CODES = frozenset(
    {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}
)
_MESSAGE_CHARS = 500
_EXAMPLES = 5


def error_table(
    *,
    rpc: str,
    model: str,
    version: str,
    request_id: str,
    code: str,
    message: str,
    received: float,
    seconds: float,
) -> pa.Table:
    """One failed call as an error-log row (``received``: the server clock, epoch seconds)."""
    now = datetime.now(UTC)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            layout.REQUEST_ID: pa.array([request_id], pa.string()),
            layout.TIMESTAMP: pa.array([int(received * 1e6)], ts),
            layout.LOG_TIMESTAMP: pa.array([now], ts),
            layout.LOG_DATE: pa.array([now.date()], pa.date32()),
            "rpc": pa.array([rpc], pa.string()),
            "requested_model": pa.array([model], pa.string()),
            "requested_version": pa.array([version], pa.string()),
            "code": pa.array([code], pa.string()),
            "message": pa.array([message[:_MESSAGE_CHARS]], pa.string()),
            "seconds": pa.array([seconds], pa.float64()),
        }
    )


def _files(log_root: Path) -> str | None:
    pattern = f"{ERRORS_DIR}/{layout.parts_pattern(PARTITION)}"
    return str(Path(log_root) / pattern) if any(Path(log_root).glob(pattern)) else None


def error_summary(
    con: duckdb.DuckDBPyConnection,
    log_root: Path,
    model: str,
    ok_requests: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
) -> dict[str, Any]:
    """Failed requests for ``model`` in ``[since, until)`` and their share of all requests.

    ``ok_requests`` is the number of requests in the same window that were
    answered (the prediction log's). Rates are of all requests (answered plus
    failed); ``None`` when there were none.
    """
    out: dict[str, Any] = {
        "requests": ok_requests,
        "failed": 0,
        "server_errors": 0,
        "client_errors": 0,
        "rate": None,
        "server_error_rate": None,
        "client_error_rate": None,
        "by_code": {},
        "examples": [],
    }
    files = _files(log_root)
    if files is not None:
        where: list[str] = ["requested_model = ?"]
        params: list[Any] = [model]
        if since is not None:
            where.append("__timestamp >= ?")
            params.append(_utc(since))
        if until is not None:
            where.append("__timestamp < ?")
            params.append(_utc(until))
        if request_id_prefix:
            where.append("starts_with(__request_id, ?)")
            params.append(request_id_prefix)
        # A view cannot take parameters: each query selects the rows itself.
        rows = (
            "WITH request_errors AS (SELECT * FROM read_parquet(?, hive_partitioning = true, "
            "hive_types = {'model': VARCHAR, 'date': DATE}) "
            f"WHERE {' AND '.join(where)}) "
        )
        by_code = con.execute(
            rows + "SELECT code, count(*) FROM request_errors GROUP BY code ORDER BY 2 DESC, 1",
            [files, *params],
        ).fetchall()
        out["by_code"] = {str(c): int(n) for c, n in by_code}
        out["failed"] = sum(out["by_code"].values())
        out["server_errors"] = sum(n for c, n in out["by_code"].items() if c in SERVER_CODES)
        out["client_errors"] = out["failed"] - out["server_errors"]
        out["examples"] = [
            {"request_id": r, "rpc": p, "code": c, "message": m, "at": t.isoformat()}
            for r, p, c, m, t in con.execute(
                rows + "SELECT __request_id, rpc, code, message, __timestamp FROM request_errors "
                f"ORDER BY __timestamp DESC LIMIT {_EXAMPLES}",
                [files, *params],
            ).fetchall()
        ]
    total = ok_requests + out["failed"]
    out["requests"] = total
    if total:
        out["rate"] = out["failed"] / total
        out["server_error_rate"] = out["server_errors"] / total
        out["client_error_rate"] = out["client_errors"] / total
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
