"""The demo's monitor step: two periods of real transactions replayed, then monitored.

The clean period just before the drift start and the drifted period just after
it (:func:`periods`), each transaction's features computed by the point-in-time
join just before it happened and sent to the Open Inference Protocol's
``ModelInfer`` with every feature as a tensor (:func:`replay`), then
:func:`framework.monitoring.summary.monitor_summary` on each period's requests
and the HTML reports (:func:`monitor`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from framework.models.manifest import Manifest

#: Transactions replayed per monitored period (at most; a tenth of the sample at small scales).
MONITOR_ROWS = 3_000
#: Rows per replayed ModelInfer request (a few hundred milliseconds' worth at most, so the
#: latency monitoring sees requests of a realistic size; the server allows 1,000).
INFER_ROWS = 100


def periods(path: Path, drift_start: datetime, n: int) -> dict[str, dict[str, Any]]:
    """The ``n`` transactions just before the drift start (clean) and the ``n`` from it on
    (drifted), as entity rows for the point-in-time join just before each transaction."""
    out: dict[str, dict[str, Any]] = {}
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, where, order in (
            ("clean", "transaction_timestamp < ?", "DESC"),
            ("drift", "transaction_timestamp >= ?", "ASC"),
        ):
            entities = con.execute(
                f"""SELECT * FROM (
                        SELECT transaction_id, user_id, merchant_id, amount,
                               hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT
                                   AS hour_of_day,
                               transaction_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp
                        FROM read_parquet(?) WHERE {where}
                        ORDER BY transaction_timestamp {order}, transaction_id LIMIT ?)
                    ORDER BY event_timestamp, transaction_id""",
                [str(path), drift_start, n],
            ).to_arrow_table()
            times = entities.column("event_timestamp")
            out[name] = {
                "entities": entities,
                "rows": entities.num_rows,
                "start": pc.min(times).as_py() + timedelta(microseconds=1),
                "end": pc.max(times).as_py() + timedelta(microseconds=1),
            }
    finally:
        con.close()
    return out


def replay(
    target: str, model: str, manifest: Manifest, features: Any, prefix: str,
    version: str = "",
) -> None:  # fmt: skip
    """Send the feature rows to ``ModelInfer`` with every model feature as a tensor (plain
    model serving), ``INFER_ROWS`` rows a request, request ids ``prefix`` + a number; to
    ``version`` if given, else the champion."""
    import grpc
    import numpy as np

    from serving.stubs.inference import grpc_predict_v2_pb2 as v2
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    fields = manifest.features
    with grpc.insecure_channel(target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        for i, offset in enumerate(range(0, features.num_rows, INFER_ROWS)):
            chunk = features.slice(offset, INFER_ROWS)
            request = v2.ModelInferRequest(
                model_name=model, model_version=version, id=f"{prefix}{i}"
            )
            for f in fields:
                column = chunk.column(f.name)
                tensor = request.inputs.add(name=f.name, shape=[chunk.num_rows])
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    tensor.datatype = "BYTES"
                    # A V2 BYTES tensor has no null: an empty string stands for one.
                    tensor.contents.bytes_contents.extend(
                        (v or "").encode() for v in column.to_pylist()
                    )
                else:
                    tensor.datatype = "FP64"
                    values = column.cast("float64").to_numpy(zero_copy_only=False)
                    tensor.contents.fp64_contents.extend(np.asarray(values, np.float64))
            stub.ModelInfer(request, timeout=60)


def monitor(
    data: Path, registry: Any, model: str, periods: dict[str, dict[str, Any]],
    drift: tuple[str, ...],
) -> dict[str, Any]:  # fmt: skip
    """Monitor each replayed period on its own and write the reports."""
    from framework.monitoring.report import write_report
    from framework.monitoring.summary import monitor_summary

    out: dict[str, Any] = {"drift_scenarios": list(drift)}
    for name, period in periods.items():
        summary = monitor_summary(
            data / "predictions", registry, model, request_id_prefix=period["request_prefix"]
        )
        report = write_report(
            data / ("monitor.html" if name == "drift" else f"monitor-{name}.html"), summary
        )
        found = summary.to_dict()  # the demo prints what parity monitor --json prints
        version = found["versions"][0] if found["versions"] else {}
        verdict = (version.get("drift") or {}).get("dataset") or {}
        out[name] = {
            "period": {"start": period["start"].isoformat(), "end": period["end"].isoformat()},
            "replayed": period["rows"],
            "rows": found["window"]["rows"],
            "request_prefix": period["request_prefix"],
            "status": found["status"],
            "dataset_drift": verdict.get("status"),
            "drifted_features": verdict.get("drifted_features", []),
            "evaluated_features": verdict.get("evaluated_features", 0),
            "features": {
                f["feature"]: {"status": f["status"], "psi": f["psi"], "reasons": f["reasons"]}
                for f in (version.get("drift") or {}).get("features", [])
            },
            "alerts": sorted({a["name"] for a in found["alerts"]}),
            "report": str(report),
        }
    return out


def monitor_line(m: dict[str, Any]) -> str:
    """The monitor step's one line: what was replayed and each period's verdict."""
    clean, drifted = m["clean"], m["drift"]

    def verdict(p: dict[str, Any]) -> str:
        if p["dataset_drift"] in (None, "insufficient_data"):
            return f"no verdict ({p['rows']:,} rows)"
        return f"{len(p['drifted_features'])} of {p['evaluated_features']} features drifted"

    return (
        f"replayed {clean['rows']:,} clean + {drifted['rows']:,} drifted transactions through "
        f"ModelInfer; clean period: {verdict(clean)}, drifted period: {verdict(drifted)} "
        f"-> {drifted['report']}"
    )
