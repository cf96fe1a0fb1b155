"""Failed requests reach ``parity monitor``: the running server logs each failed
prediction call (status code, message, request id) beside the predictions, and
the monitor reports error rates by whose fault, alerts on them, and still
reports a model whose every request failed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from framework.logs.failed_requests import ERRORS_DIR, PARTITION, error_table
from framework.monitoring import summary as monitor
from framework.monitoring.prometheus import prometheus_text
from framework.monitoring.results import MonitorSummary
from framework.monitoring.thresholds import parse_thresholds
from framework.registry.model_registry import ARTIFACT, ModelRegistry
from serving.log.writer import PredictionLog
from tests.support.fraud_requests import recent_rows
from tests.support.prediction_logs import MODEL, T0, toy_manifest, toy_rows, write_log
from tests.support.workspaces import Served


def _errors(root: Path, calls: list[tuple[str, str, str, int]]) -> None:
    """Log failed calls ``(request_id, code, model, seconds after T0)`` as the server does."""
    log = PredictionLog(root / "predictions" / ERRORS_DIR)
    for request_id, code, model, after in calls:
        log.append(
            error_table(rpc="Predict", model=model, version="", request_id=request_id, code=code,
                        message=f"{code.lower()} for {request_id}",
                        received=(T0 + timedelta(seconds=after)).timestamp(), seconds=0.001),
            model=PARTITION,
        )  # fmt: skip
    assert log.close(30)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    registry.register(MODEL, {ARTIFACT: b"not a model"}, toy_manifest(np.random.default_rng(0)))
    return registry


def test_error_rates_by_fault_and_their_alerts(tmp_path: Path, registry: ModelRegistry) -> None:
    rng = np.random.default_rng(1)
    log = write_log(tmp_path, toy_rows(rng, 980))  # 980 answered requests within 2 h of T0
    _errors(
        tmp_path,
        [(f"bad-{i}", "INVALID_ARGUMENT", MODEL, i) for i in range(12)]
        + [(f"down-{i}", "UNAVAILABLE", MODEL, i) for i in range(7)]
        + [("int-0", "INTERNAL", MODEL, 5)]
        + [(f"other-{i}", "INTERNAL", "other_model", i) for i in range(50)]  # not this model
        + [("late", "INTERNAL", MODEL, 3 * 3600)],  # outside the window below
    )
    summary = monitor.monitor_summary(log, registry, MODEL, until=T0 + timedelta(hours=2))
    e = summary.errors
    assert e["by_code"] == {"INVALID_ARGUMENT": 12, "UNAVAILABLE": 7, "INTERNAL": 1}
    assert (e["requests"], e["failed"], e["server_errors"], e["client_errors"]) == (1000, 20, 8, 12)
    assert e["server_error_rate"] == pytest.approx(0.008)
    assert e["client_error_rate"] == pytest.approx(0.012)
    logged = {"int-0", *(f"bad-{i}" for i in range(12)), *(f"down-{i}" for i in range(7))}
    assert len(e["examples"]) == 5 and {x["request_id"] for x in e["examples"]} <= logged
    names = {a.name for a in summary.alerts}
    assert "server_error_rate" not in names and "client_error_rate" not in names  # 0.8 % < 1 %
    # The window that holds the late INTERNAL error too: 9 of 1,001 server failures > 0.8 %.
    strict = parse_thresholds(["server_error_rate=0.0085", "client_error_rate=0.01"])
    summary = monitor.monitor_summary(log, registry, MODEL, thresholds=strict)
    by_name = {a.name: a for a in summary.alerts}
    assert by_name["server_error_rate"].value == pytest.approx(9 / 1001)
    assert by_name["server_error_rate"].severity == "critical"
    assert "(UNAVAILABLE 7, INTERNAL 2) > 0.85%" in by_name["server_error_rate"].message
    assert by_name["client_error_rate"].value == pytest.approx(12 / 1001)
    # Every output carries them: text, HTML, Prometheus.
    html = monitor_html(summary)
    assert "Failed requests" in html and "UNAVAILABLE" in html and "internal for late" in html
    prom = prometheus_text(summary)
    assert 'parity_monitor_error_rate{kind="server",model="toy_model"} 0.00899' in prom
    assert 'parity_monitor_failed_requests{code="UNAVAILABLE",model="toy_model"} 7.0' in prom


def monitor_html(summary: MonitorSummary) -> str:
    from framework.monitoring.report import render_html

    return render_html(summary)


def test_a_model_whose_every_request_fails_is_reported(
    tmp_path: Path, registry: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    from framework.cli import main as cli

    _errors(tmp_path, [(f"x-{i}", "INTERNAL", MODEL, i) for i in range(600)])
    log = tmp_path / "predictions"
    summary = monitor.monitor_summary(log, registry, MODEL)
    assert summary.window.rows == 0 and summary.versions == []
    assert summary.errors["server_error_rate"] == 1.0
    assert summary.status == "alert"
    argv = ["monitor", "--log", str(log), "--registry", str(registry.root), "--model", MODEL]
    assert cli.main(argv) == 7
    assert "failed requests: 600 of 600 (100.0%; server 100.0%, client 0.0%): INTERNAL 600" in (
        capsys.readouterr().out
    )
    # Without errors either, it is still the clear "no rows" error.
    with pytest.raises(Exception, match="has no rows"):
        monitor.monitor_summary(log, registry, "another_model")


@pytest.mark.integration
def test_the_server_logs_failed_prediction_calls(served: Served) -> None:
    from serving.grpc.client import PredictionClient
    from serving.stubs.inference import grpc_predict_v2_pb2 as v2
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
    from serving.stubs.parity.v1 import prediction_pb2 as pb
    from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

    rows = recent_rows(served, 3)
    with PredictionClient(served.target) as client:
        for i in range(4):
            client.predict("fraud_model", rows, request_id=f"errlog-ok-{i}")
    channel = grpc.insecure_channel(served.target)
    predict = pb_grpc.PredictionServiceStub(channel).Predict
    infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    bad = [
        (predict, pb.PredictRequest(model_name="fraud_model", model_version="999",
                                    request_id="errlog-v999", rows=[pb.Row()])),
        (predict, pb.PredictRequest(model_name="fraud_model", request_id="errlog-norows")),
        (infer, v2.ModelInferRequest(model_name="fraud_model", id="errlog-infer", inputs=[
            v2.ModelInferRequest.InferInputTensor(name="nope", datatype="FP64", shape=[1],
                                                  contents=v2.InferTensorContents(fp64_contents=[1]))
        ])),
    ]  # fmt: skip
    codes = {}
    for call, request in bad:
        with pytest.raises(grpc.RpcError) as failed:
            call(request, timeout=10)
        err: Any = failed.value
        rid = getattr(request, "request_id", "") or request.id
        assert dict(err.trailing_metadata())["x-request-id"] == rid
        codes[rid] = err.code().name
    # A call without a request id gets one, and the client learns it.
    with pytest.raises(grpc.RpcError) as failed:
        predict(pb.PredictRequest(model_name="fraud_model"), timeout=10)
    generated = dict(failed.value.trailing_metadata())["x-request-id"]
    assert len(generated) == 32
    channel.close()
    assert served.running.error_log.flush(30) and served.running.prediction_log.flush(30)

    summary = monitor.monitor_summary(
        served.workspace.data / "predictions", served.registry, "fraud_model",
        request_id_prefix="errlog-",
    )  # fmt: skip
    e = summary.errors
    assert e["failed"] == 3 and e["requests"] == 7
    assert e["by_code"] == _count(codes.values())
    assert codes == {"errlog-v999": "NOT_FOUND", "errlog-norows": "INVALID_ARGUMENT",
                     "errlog-infer": "INVALID_ARGUMENT"}  # fmt: skip
    example = next(x for x in e["examples"] if x["request_id"] == "errlog-infer")
    assert example["rpc"] == "ModelInfer" and "'nope'" in example["message"]
    # The errors are stamped with the server's clock, like its predictions.
    assert example["at"][:10] == served.now.date().isoformat()
    json.dumps(summary.to_dict())  # JSON-ready


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))
