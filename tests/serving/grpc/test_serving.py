"""The gRPC prediction server, over real sockets: parity's API, KServe V2 (with
tritonclient, a client nobody here wrote), health, reflection, metrics, the
prediction log, and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest

from framework.features.training_set import build_training_set
from serving.grpc.client import PredictionClient
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from serving.stubs.parity.v1 import prediction_pb2 as pb
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc
from tests.support.client_env import client_python
from tests.support.fraud_requests import feature_tensors, proto_row, recent_rows
from tests.support.serve_process import parity_serve
from tests.support.workspaces import Served

pytestmark = pytest.mark.integration
MODEL = "fraud_model"


def test_predict_names_the_version_and_decides(served: Served) -> None:
    rows = recent_rows(served, 5)
    with PredictionClient(served.target) as client:
        out = client.predict(MODEL, rows, return_features=True, request_id="req-1")
    assert [p["row_index"] for p in out] == [0, 1, 2, 3, 4]
    for p in out:
        assert p["request_id"] == "req-1"
        assert (p["model_name"], p["model_version"]) == (MODEL, "1")
        assert 0.0 <= p["score"] <= 1.0
        assert p["confidence"] == pytest.approx(max(p["score"], 1 - p["score"]))
        assert p["decision"] in ("ACCEPT", "VALIDATE", "REVIEW")
        assert p["reasons"][0].startswith("confidence")
        assert len(p["features"]) == 17


def test_served_features_equal_the_training_set_at_request_time(served: Served) -> None:
    """One definition, both paths: for sampled entities the vector the server used is the
    point-in-time join at the request time, value for value — TTL-expired values are
    null on both paths, although Feast's own online read still returns them."""
    rows = recent_rows(served, 40)
    with PredictionClient(served.target) as client:
        out = client.predict(MODEL, rows, return_features=True)
    entity_df = pd.DataFrame(
        [{**r["entity_keys"], **r["request_data"], "event_timestamp": served.now} for r in rows]
    )
    offline = build_training_set(served.store, "fraud_model_v1", entity_df).to_pylist()
    stale_seen = present_seen = 0
    for served_row, offline_row in zip(out, offline, strict=True):
        for name, value in served_row["features"].items():
            expected = offline_row[name]
            if expected is None:
                assert value is None, name
            elif isinstance(expected, float):
                assert value == pytest.approx(expected, rel=1e-12), name
            else:
                assert value == expected, name
        stale_seen += served_row["features"]["txn_count_1h"] is None
        present_seen += served_row["features"]["txn_count_7d"] is not None
    assert stale_seen and present_seen  # both cases were exercised
    raw = served.store.get_online_features(
        features=["user_txn_1h:txn_count_1h"], entity_rows=[r["entity_keys"] for r in rows]
    ).to_dict()["txn_count_1h"]
    served_1h = [p["features"]["txn_count_1h"] for p in out]
    assert any(f is not None and s is None for f, s in zip(raw, served_1h, strict=True)), (
        "Feast returned no expired value, so the TTL enforcement went untested"
    )


def test_concurrent_requests_share_runs_and_get_their_own_answers(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under concurrency the server scores several requests in one run (one online read,
    one model call, one log append); every caller still gets exactly the answer (and
    features) of its own rows, the same as one request carrying all of them."""
    import itertools
    from concurrent.futures import ThreadPoolExecutor

    from framework.registry.model_registry import ModelRef

    rows = recent_rows(served, 48)
    with PredictionClient(served.target) as client:
        together = client.predict(MODEL, rows, return_features=True)
    loaded = served.running.predictor.load(ModelRef(MODEL, 1))
    runs = loaded.requests
    assert runs is not None
    calls, parts = runs.calls, runs.batched_frames
    reads, read = itertools.count(), loaded.read  # a run reads directly, not via ``lookup``
    monkeypatch.setattr(loaded, "read", lambda rows: (next(reads), read(rows))[1])
    with PredictionClient(served.target) as client, ThreadPoolExecutor(16) as pool:
        for n in range(3):

            def one(i: int, n: int = n) -> dict[str, Any]:
                return client.predict(
                    MODEL, [rows[i]], return_features=True, request_id=f"c{n}-{i}"
                )[0]

            alone = list(pool.map(one, range(len(rows))))
            for i, (a, t) in enumerate(zip(alone, together, strict=True)):
                assert a["request_id"] == f"c{n}-{i}" and a["row_index"] == 0
                assert a["score"] == t["score"]
                assert a["decision"] == t["decision"]
                assert a["features"] == t["features"]
    assert runs.batched_frames - parts == 3 * len(rows)
    assert runs.calls - calls < 3 * len(rows)  # some requests were scored together
    assert next(reads) == runs.calls - calls  # one online read per run


def test_the_server_scores_compiled_with_scikit_learns_numbers(served: Served) -> None:
    """The version is scored by its compiled form from the first request on (compiled
    before the server said ready), and every served score is the scikit-learn model's
    own on the served features, bit for bit, in one request of 40 rows or one by one."""
    import pyarrow as pa

    from framework.models.compiled import CompiledModel
    from framework.models.estimator import feature_frame
    from framework.registry.model_registry import ModelRef

    loaded = served.running.predictor.load(ModelRef(MODEL, 1))
    assert loaded.compiling is not None and loaded.compiling.done()
    assert loaded.compiling.result() is True
    assert isinstance(loaded.batched.model, CompiledModel)
    rows = recent_rows(served, 40)
    with PredictionClient(served.target) as client:
        together = client.predict(MODEL, rows, return_features=True)
        alone = [client.predict(MODEL, [r])[0] for r in rows[:12]]
    features = pa.table(
        {
            f.name: pa.array(
                [p["features"][f.name] for p in together],
                pa.string() if f.categorical else pa.float64(),
            )
            for f in loaded.fields
        }
    )
    frame = feature_frame(features, loaded.fields)
    want = loaded.model.predict_proba(frame)[:, 1]
    assert [p["score"] for p in together] == want.tolist()
    for i, a in enumerate(alone):
        assert a["score"] == float(loaded.model.predict_proba(frame.iloc[i : i + 1])[0, 1])


def test_model_info(served: Served) -> None:
    with PredictionClient(served.target) as client:
        info = client.model_info(MODEL)
        pinned = client.model_info(MODEL, version="1")
    assert info == pinned
    assert info["version"] == "1" and info["aliases"] == ["champion"]
    assert info["feature_service"] == "fraud_model_v1"
    assert {"name": "category", "dtype": "String"} in info["features"]
    assert info["thresholds"] == {"accept": 0.85, "review": 0.6}


def test_report_outcome_is_stored(served: Served) -> None:
    from framework.logs.outcomes import OutcomeStore

    with PredictionClient(served.target) as client:
        ack = client.report_outcome("req-1", label=1.0, entity_keys={"user_id": 7})
    assert ack == {"accepted": True, "status": "recorded"}
    stored = OutcomeStore(served.workspace.data / "outcomes").read()
    assert {"request_id": "req-1", "label": 1.0} == {
        k: stored[-1][k] for k in ("request_id", "label")
    }


BAD = "INVALID_ARGUMENT"
GOOD = {"user_id": 1, "merchant_id": 1, "amount": 10.0, "hour_of_day": 3}


@pytest.mark.parametrize(
    ("request_fields", "code", "names"),
    [
        ({"model_name": "nope", "rows": [GOOD]}, "NOT_FOUND", "No model 'nope'"),
        ({"model_name": MODEL, "model_version": "9", "rows": [GOOD]}, "NOT_FOUND", "version 9"),
        ({"model_name": MODEL, "model_alias": "staging", "rows": [GOOD]}, "NOT_FOUND", "staging"),
        ({"model_name": MODEL, "model_version": "x", "rows": [GOOD]}, BAD, "model_version"),
        ({"model_name": "", "rows": [GOOD]}, "INVALID_ARGUMENT", "model_name"),
        ({"model_name": MODEL, "rows": []}, "INVALID_ARGUMENT", "at least one row"),
        ({"model_name": MODEL, "rows": [GOOD] * 501}, "INVALID_ARGUMENT", "limit of 500"),
        ({"model_name": MODEL, "rows": [{**GOOD, "merchant_id": None}]}, BAD, "entity_keys"),
        ({"model_name": MODEL, "rows": [{**GOOD, "user_id": "abc"}]}, BAD, "must be INT64"),
        ({"model_name": MODEL, "rows": [{**GOOD, "colour": 1}]}, BAD, "unknown request field"),
        ({"model_name": MODEL, "rows": [{**GOOD, "amount": None}]}, BAD, "missing request"),
    ],
)  # fmt: skip
def test_bad_input_gets_its_status_and_the_server_stays_up(
    served: Served, request_fields: dict[str, Any], code: str, names: str
) -> None:
    fields = dict(request_fields)
    rows = [proto_row(**{k: v for k, v in r.items() if v is not None}) for r in fields.pop("rows")]
    with grpc.insecure_channel(served.target) as channel:
        stub = pb_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(pb.PredictRequest(rows=rows, **fields), timeout=30)
        assert err.value.code().name == code
        assert names in (err.value.details() or "")
        ok = stub.Predict(pb.PredictRequest(model_name=MODEL, rows=[proto_row(**GOOD)]), timeout=30)
        assert ok.predictions[0].model_version == "1"


def test_health_and_reflection(served: Served) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "parity.v1.PredictionService", "inference.GRPCInferenceService"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"parity.v1.PredictionService", "inference.GRPCInferenceService"} <= services
    assert "grpc.health.v1.Health" in services


# ------------------------------------------------------------------- KServe V2


def test_tritonclient_against_the_v2_service(served: Served) -> None:
    rows = recent_rows(served, 6)
    with PredictionClient(served.target) as parity_client:
        reference = parity_client.predict(MODEL, rows, return_features=True)
        info = parity_client.model_info(MODEL)
    keys = {
        "user_id": ("INT64", [r["entity_keys"]["user_id"] for r in rows]),
        "merchant_id": ("INT64", [r["entity_keys"]["merchant_id"] for r in rows]),
        "amount": ("FP64", [r["request_data"]["amount"] for r in rows]),
        "hour_of_day": ("INT64", [r["request_data"]["hour_of_day"] for r in rows]),
    }
    # Plain model serving: every feature as a tensor (missing numbers as NaN).
    features = feature_tensors(info, reference)
    script = Path(__file__).parents[2] / "testdata" / "triton_client.py"
    child = subprocess.run(
        [client_python(), str(script), served.target,
         json.dumps({"model": MODEL, "keys": keys, "features": features})],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    out = json.loads(child.stdout)
    assert out["live"] and out["ready"] and out["model_ready"] and out["version_ready"]
    meta = out["metadata"]
    assert meta["name"] == MODEL and "1" in meta["versions"]
    assert {"name": "category", "datatype": "BYTES", "shape": ["-1"]} in meta["inputs"]
    assert [o["name"] for o in meta["outputs"]] == ["score", "label", "confidence", "decision"]
    assert out["server"]["name"] == "parity"
    expected = [p["score"] for p in reference]
    for way in ("by_keys", "by_features"):
        assert out[way]["score"] == pytest.approx(expected), way
        assert out[way]["decision"] == [p["decision"] for p in reference], way
        assert out[way]["label"] == [int(p["label"]) for p in reference], way


def test_v2_typed_contents_equal_raw_contents(served: Served) -> None:
    rows = recent_rows(served, 3)
    request = v2.ModelInferRequest(model_name=MODEL, id="typed")
    for name in ("user_id", "merchant_id", "hour_of_day"):
        t = request.inputs.add(name=name, datatype="INT64", shape=[len(rows)])
        values = [r["entity_keys"].get(name, r["request_data"].get(name)) for r in rows]
        t.contents.int64_contents.extend(values)
    t = request.inputs.add(name="amount", datatype="FP64", shape=[len(rows)])
    t.contents.fp64_contents.extend(r["request_data"]["amount"] for r in rows)
    raw = v2.ModelInferRequest(model_name=MODEL, id="raw")
    for tensor in request.inputs:
        raw.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        dtype = np.int64 if tensor.datatype == "INT64" else np.float64
        values = tensor.contents.int64_contents or tensor.contents.fp64_contents
        raw.raw_input_contents.append(np.array(values, dtype=dtype).tobytes())
    with grpc.insecure_channel(served.target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        typed_out = stub.ModelInfer(request, timeout=30)
        raw_out = stub.ModelInfer(raw, timeout=30)
    assert typed_out.id == "typed" and typed_out.model_version == "1"
    scores = list(typed_out.outputs[0].contents.fp64_contents)
    assert len(scores) == len(rows) and not raw_out.outputs[0].contents.fp64_contents
    assert np.frombuffer(raw_out.raw_output_contents[0], "<f8").tolist() == scores


@pytest.mark.parametrize(
    ("mutate", "names"),
    [
        (lambda r: r.inputs.add(name="user_id", datatype="INT64", shape=[2, 2]), "shape"),
        (lambda r: r.inputs.add(name="user_id", datatype="COMPLEX", shape=[1]), "datatype"),
        (lambda r: r.inputs.add(name="colour", datatype="INT64", shape=[0]), "colour"),
        (lambda r: r.raw_input_contents.append(b"\x01\x02\x03"), "raw_input_contents"),
        (lambda r: None, "at least one input"),
    ],
)
def test_v2_bad_input_is_invalid_argument(served: Served, mutate: Any, names: str) -> None:
    request = v2.ModelInferRequest(model_name=MODEL)
    mutate(request)
    with grpc.insecure_channel(served.target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert names in (err.value.details() or "")


# --------------------------------------------------------------- observability


def test_metrics_endpoint(served: Served) -> None:
    with PredictionClient(served.target) as client:
        client.predict(MODEL, recent_rows(served, 2))
    port = served.running.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'parity_requests_total{code="OK",model="fraud_model",rpc="Predict",version="1"}' in text
    assert (
        'parity_latency_seconds_bucket{le="0.005",model="fraud_model",stage="feature_lookup",'
        'version="1"}' in text
    )
    assert 'parity_model_info{aliases="champion",model="fraud_model",version="1"} 1.0' in text
    assert "parity_stale_features_total" in text
    assert "# TYPE parity_feature_older_than_training_total counter" in text
    assert "parity_confidence_bucket" in text
    # The process and runtime series Prometheus users expect from any client.
    for series in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "process_start_time_seconds", "python_info"):  # fmt: skip
        assert re.search(rf"^{series}(\{{[^}}]*\}})? [0-9.e+]+$", text, re.M), series


# ------------------------------------------------------------ lifecycle and drift


def _copy(served: Served, root: Path) -> Path:
    import shutil

    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    return root


@pytest.mark.slow
def test_sigterm_flushes_every_accepted_prediction(served: Served, tmp_path: Path) -> None:
    """A real ``parity serve`` process under concurrent traffic, stopped by SIGTERM:
    every prediction it answered is in the log exactly once."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from framework.logs.reader import read_log

    root = _copy(served, tmp_path / "ws")
    with parity_serve(
        "--repo", str(root / "feature_repo"), "--log-level", "DEBUG", logs=tmp_path
    ) as server:  # fmt: skip
        rows = recent_rows(served, 3)

        def call(i: int) -> list[str]:
            with PredictionClient(server.target) as client:
                return [
                    p["request_id"]
                    for p in client.predict(MODEL, rows[: 1 + i % 3], request_id=f"r{i}")
                ]

        with ThreadPoolExecutor(8) as pool:
            answered = [rid for ids in pool.map(call, range(120)) for rid in ids]
        assert server.stop(signal.SIGTERM) == 0
        assert "prediction log flushed" in server.output()
    logged = read_log(root / "data" / "predictions", MODEL)
    ids, rows_ = logged["__request_id"].to_pylist(), logged["__row_index"].to_pylist()
    pairs = list(zip(ids, rows_, strict=True))
    assert len(pairs) == len(answered) == sum(1 + i % 3 for i in range(120))
    assert len(set(pairs)) == len(pairs)  # exactly once
    assert sorted({r for r, _ in pairs}) == sorted(set(answered))
    assert set(logged["model_version"].to_pylist()) == {"1"}
    assert "txn_count_7d__status" in logged.column_names
    # Structured logs: one JSON record per call, carrying the request id.
    records = [json.loads(line) for line in server.errors().splitlines()]
    calls = [r for r in records if r.get("rpc") == "Predict"]
    assert len(calls) == 120
    assert {"request_id": "r7", "code": "OK", "version": "1", "model": MODEL}.items() <= next(
        r for r in calls if r["request_id"] == "r7"
    ).items()


@pytest.mark.slow
def test_sigkill_loses_no_answered_prediction(served: Served, tmp_path: Path) -> None:
    """``kill -9`` of a real ``parity serve`` under 8 concurrent clients, its log batching
    for an hour so nothing is in a file yet: after a restart every prediction it answered
    is in the log exactly once (recovered from its journal)."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from framework.logs.reader import read_log

    root = _copy(served, tmp_path / "ws")
    predictions = root / "data" / "predictions"
    repo = ("--repo", str(root / "feature_repo"))
    batching = {**os.environ, "PARITY_SERVE_LOG_FLUSH_SECONDS": "3600"}
    with parity_serve(*repo, logs=tmp_path, name="first", env=batching) as server:
        rows = recent_rows(served, 3)

        def call(i: int) -> list[tuple[str, int]]:
            with PredictionClient(server.target) as client:
                answers = client.predict(MODEL, rows[: 1 + i % 3], request_id=f"k{i}")
                return [(a["request_id"], j) for j, a in enumerate(answers)]

        with ThreadPoolExecutor(8) as pool:
            answered = [pair for pairs in pool.map(call, range(160)) for pair in pairs]
        assert not list(predictions.glob("model=*/date=*/part-*.parquet"))  # all in memory
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    # A restart recovers the journal before it serves; SIGTERM then flushes.
    with parity_serve(*repo, logs=tmp_path, name="restart") as again:
        assert again.stop(signal.SIGTERM) == 0
        assert "recovered" in again.errors()
    logged = read_log(predictions, MODEL)
    pairs = list(
        zip(logged["__request_id"].to_pylist(), logged["__row_index"].to_pylist(), strict=True)
    )
    assert len(answered) == sum(1 + i % 3 for i in range(160))
    assert Counter(pairs) == Counter(answered)  # every answered row, exactly once


@pytest.mark.slow
def test_a_full_disk_pushes_back_and_loses_no_answered_prediction(
    served: Served, tmp_path: Path
) -> None:
    """The prediction log's folder on a real, full file system (a 256 KiB tmpfs): the
    server keeps answering while the rows fit in memory, then refuses calls with
    RESOURCE_EXHAUSTED naming the folder and the cause, stays up, and once space returns
    every prediction it answered is written exactly once."""
    import contextlib

    from framework.logs.reader import read_log
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    predictions = tmp_path / "predictions"
    predictions.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(predictions)],
            capture_output=True,
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    try:
        filler = predictions / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        settings = ServeSettings(port=0, log_flush_seconds=0.05, log_max_pending_rows=40)
        running = start_server(
            served.store, served.registry, tmp_path, settings, clock=served.now.timestamp
        )
        answered: list[tuple[str, int]] = []
        try:
            rows = recent_rows(served, 2)
            with PredictionClient(f"127.0.0.1:{running.port}") as client:
                refused = None
                for i in range(100):
                    try:
                        out = client.predict(MODEL, rows, request_id=f"full-{i}")
                    except grpc.RpcError as exc:
                        refused = exc
                        break
                    answered += [(p["request_id"], j) for j, p in enumerate(out)]
                assert refused is not None, "the server never pushed back"
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
                details = refused.details()  # type: ignore[attr-defined]
                assert str(predictions) in details and "No space left on device" in details
                assert len(answered) == 40  # what fits in memory, no more
                filler.unlink()  # space returns
                assert running.prediction_log.flush(60)
                out = client.predict(MODEL, rows, request_id="after")  # and it serves again
                answered += [(p["request_id"], j) for j, p in enumerate(out)]
        finally:
            running.stop(5)
        logged = read_log(predictions, MODEL)
        pairs = zip(logged["__request_id"].to_pylist(), logged["__row_index"].to_pylist(),
                    strict=True)  # fmt: skip
        assert Counter(pairs) == Counter(answered)
    finally:
        subprocess.run(["umount", "-l", str(predictions)], check=False)


@pytest.mark.slow
def test_changed_definitions_are_failed_precondition(served: Served, tmp_path: Path) -> None:
    from framework.features.repository import apply, open_store
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    root = _copy(served, tmp_path / "ws")
    repo = root / "feature_repo"
    # A fresh Feast registry: the copied one records the served workspace's online tables
    # (absolute paths), and Feast's apply would tear those down.
    (root / "data" / "feast" / "registry.db").unlink()
    source = (repo / "fraud.py").read_text()
    (repo / "fraud.py").write_text(source.replace("        merchant_profile,\n", "", 1))
    apply(repo)
    with open_store(repo) as store:
        running = start_server(
            store, served.registry.__class__(root / "data" / "models"), root / "data",
            ServeSettings(port=0, models=[]),
        )  # fmt: skip
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = pb_grpc.PredictionServiceStub(channel)
                with pytest.raises(grpc.RpcError) as err:
                    stub.Predict(pb.PredictRequest(model_name=MODEL, rows=[proto_row(**GOOD)]))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "merchant_profile:category" in (err.value.details() or "")
        finally:
            running.stop(1)


def test_parity_predict_command(served: Served) -> None:
    args = ["--target", served.target, "--model", MODEL, "--entity", "user_id=1",
            "--entity", "merchant_id=1",
            "--request", "amount=12.5", "--request", "hour_of_day=3"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "framework.cli", "predict", *args, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model_version"] == "1" and answer["decision"] in ("ACCEPT", "VALIDATE", "REVIEW")
    bad = subprocess.run(
        [sys.executable, "-m", "framework.cli", "predict", *args[:8], "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "parity predict: error: INVALID_ARGUMENT: rows[0].request_data: "
        "missing request field 'amount'."
    )


def test_sigterm_while_workers_are_still_starting_is_a_clean_stop(
    served: Served, tmp_path: Path
) -> None:
    """SIGTERM right after the parent says it starts workers: they are still importing
    and loading (no handler yet) and die of the signal; nothing was accepted, so the
    parent stops cleanly (exit 0) instead of reporting failed workers."""
    import signal

    root = _copy(served, tmp_path / "ws")
    args = ("--repo", str(root / "feature_repo"), "--workers", "2", "--now", served.now.isoformat())
    with parity_serve(*args, logs=tmp_path, ready=False) as server:
        server.wait_for_output("starting 2 worker processes")
        assert server.stop(signal.SIGTERM) == 0, server.errors()
        assert "stopped" in server.output()


def test_workers_that_cannot_listen_are_a_clear_error(served: Served, tmp_path: Path) -> None:
    """A port another program holds: each worker says it cannot listen, the parent never
    claims to listen, stops the others and exits 2 naming the worker."""
    import socket

    root = _copy(served, tmp_path / "ws")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "framework.cli", "serve", "--repo", str(root / "feature_repo"),
             "--port", str(port), "--workers", "2", "--now", served.now.isoformat()],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "starting 2 worker processes" in result.stdout
    assert "listening on" not in result.stdout
    assert f"cannot listen on 127.0.0.1:{port} (the port is taken" in result.stderr
    assert "exited with 2 before listening" in result.stderr
    assert "Traceback" not in result.stderr


def _two_free_ports() -> int:
    """A port P such that P and P + 1 were both free a moment ago."""
    import socket

    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


def test_example_scrape_configuration_is_valid_and_lists_a_target_per_worker() -> None:
    """deploy/prometheus/prometheus.yml passes ``promtool check config``, and its parity
    job lists one target per worker port of its ``--workers N --metrics-port P`` comment."""
    import shutil

    import yaml

    from tests.support.services import missing

    promtool = shutil.which("promtool")
    if not promtool:
        missing("promtool is not installed (Debian: apt-get install prometheus)")
        return
    folder = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
    proc = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=folder,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (folder / "prometheus.yml").read_text()
    workers, port = map(int, re.findall(r"--workers (\d+) --metrics-port (\d+)", text)[0])
    (job,) = [j for j in yaml.safe_load(text)["scrape_configs"] if j["job_name"] == "parity"]
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert [int(t.rsplit(":", 1)[1]) for t in targets] == [port + i for i in range(workers)]


@pytest.mark.slow
def test_worker_processes_share_one_port(served: Served, tmp_path: Path) -> None:
    """``--workers 2``: two processes answer on one port (SO_REUSEPORT), ``--now`` replays
    the sample's time, and SIGTERM drains both with every answer logged."""
    import signal

    from framework.logs.reader import read_log

    root = _copy(served, tmp_path / "ws")
    metrics_port = _two_free_ports()
    args = ("--repo", str(root / "feature_repo"), "--workers", "2", "--now", served.now.isoformat(),
            "--log-level", "DEBUG", "--metrics-port", str(metrics_port),
            "--http-port", "0")  # fmt: skip
    with parity_serve(*args, logs=tmp_path) as server:
        # Ready: the parent said 'listening' once both workers listened with their models.
        first = server.output().splitlines()[0]
        assert "starting 2 worker processes" in first
        assert "with 2 worker processes" in server.line
        # --cpu-affinity spread (the default): each worker, every thread of it, on its own
        # core (where the machine has two).
        workers = [int(p) for p in first.split("(pids ")[1].split(")")[0].split(", ")]
        placed = [
            {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")}
            for pid in workers
        ]
        cores = sorted(os.sched_getaffinity(0))
        assert placed == [{frozenset({cores[i % len(cores)]})} for i in range(2)]
        rows = recent_rows(served, 2)
        answers = []
        for i in range(40):  # a new connection each time: the kernel spreads them
            with PredictionClient(server.target, timeout=5) as client:
                answers += client.predict(MODEL, rows, request_id=f"w{i}")
        # The HTTP/REST port is shared the same way (one port picked for both workers).
        inputs = [
            {"name": k, "datatype": "FP64" if k == "amount" else "INT64", "shape": [2],
             "data": [r[part][k] for r in rows]}
            for part in ("entity_keys", "request_data") for k in rows[0][part]
        ]  # fmt: skip
        url = f"http://127.0.0.1:{server.http_port}/v2/models/{MODEL}/infer"
        for i in range(40):
            body = json.dumps({"id": f"h{i}", "inputs": inputs}).encode()
            with urllib.request.urlopen(urllib.request.Request(url, body), timeout=10) as reply:
                answers += [{"request_id": json.loads(reply.read())["id"]}] * 2
        # Worker i exports its own metrics on --metrics-port + i (what the example scrape
        # configuration in deploy/prometheus/prometheus.yml lists): each its own process.
        scraped = [
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port + i}/metrics", timeout=10)
            .read()
            .decode()
            for i in range(2)
        ]
        for rpc in ("Predict", "ModelInfer"):  # gRPC, and REST through the same servicer
            pattern = rf"^parity_requests_total\{{[^}}]*rpc=\"{rpc}\"[^}}]*\}} (\S+)$"
            served_by = [float(re.findall(pattern, text, re.M)[0]) for text in scraped]
            assert sum(served_by) == 40 and min(served_by) > 0, rpc
        assert server.stop(signal.SIGTERM) == 0
    assert len(answers) == 160
    assert "FALLBACK" not in {a.get("decision") for a in answers}  # features fresh at --now
    records = [json.loads(line) for line in server.errors().splitlines()]
    pids = {r["pid"] for r in records if r.get("rpc") == "Predict" and r.get("code") == "OK"}
    assert len(pids) == 2
    logged = read_log(root / "data" / "predictions", MODEL)
    assert sorted(logged["__request_id"].to_pylist()) == sorted(a["request_id"] for a in answers)


def test_model_threads_are_limited_in_every_serving_thread(served: Served) -> None:
    """OpenMP keeps its thread limit per thread: the server sets it in each thread it
    starts, not only in the one that started it (a 2-thread HistGradientBoosting call on a
    busy 2-core machine took 35 ms instead of 6)."""
    import threading

    from threadpoolctl import threadpool_info

    def openmp() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openmp"}

    assert served.running.predictor._lookups.submit(openmp).result() == {1}
    assert served.running.predictor._shadows.submit(openmp).result() == {1}
    # A thread nobody limited gets OpenMP's default: the check can tell them apart.
    import os

    plain: list[set[int]] = []
    t = threading.Thread(target=lambda: plain.append(openmp()))
    t.start()
    t.join()
    if (os.cpu_count() or 1) > 1 and "OMP_NUM_THREADS" not in os.environ:
        assert plain[0] == {os.cpu_count()}
