"""The Open Inference Protocol over HTTP/REST, on a real socket beside gRPC: tritonclient's
HTTP client (a client nobody here wrote), answers equal to gRPC's, the binary tensor
extension, the error mapping with the protocol's JSON error body, logging, and a fuzz
of malformed bodies that must each get a 4xx and leave the server answering."""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.grpc.client import PredictionClient
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.support.client_env import client_python
from tests.support.fraud_requests import feature_tensors, recent_rows
from tests.support.workspaces import Served

pytestmark = pytest.mark.integration
MODEL = "fraud_model"


def call(
    served: Served, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", served.running.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def infer(served: Served, doc: Any, path: str = f"/v2/models/{MODEL}/infer", **headers: str
          ) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    status, head, raw = call(served, "POST", path, body, **headers)
    return status, head, json.loads(raw) if head.get("content-type") == "application/json" else raw


def key_inputs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    columns = {
        "user_id": ("INT64", [r["entity_keys"]["user_id"] for r in rows]),
        "merchant_id": ("INT64", [r["entity_keys"]["merchant_id"] for r in rows]),
        "amount": ("FP64", [r["request_data"]["amount"] for r in rows]),
        "hour_of_day": ("INT64", [r["request_data"]["hour_of_day"] for r in rows]),
    }
    return [
        {"name": n, "datatype": t, "shape": [len(v)], "data": v} for n, (t, v) in columns.items()
    ]


def grpc_infer(served: Served, inputs: list[dict[str, Any]], **kw: Any) -> v2.ModelInferResponse:
    request = v2.ModelInferRequest(model_name=MODEL, **kw)
    for spec in inputs:
        tensor = request.inputs.add(
            name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
        )
        field = {"INT64": "int64_contents", "FP64": "fp64_contents"}[spec["datatype"]]
        getattr(tensor.contents, field).extend(spec["data"])
    with grpc.insecure_channel(served.target) as channel:
        return v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)


def outputs_of(doc: dict[str, Any]) -> dict[str, list[Any]]:
    return {o["name"]: o["data"] for o in doc["outputs"]}


# --------------------------------------------------------------- a client nobody here wrote


def test_tritonclient_http_against_the_rest_binding(served: Served) -> None:
    rows = recent_rows(served, 6)
    with PredictionClient(served.target) as parity_client:
        reference = parity_client.predict(MODEL, rows, return_features=True)
        info = parity_client.model_info(MODEL)
    keys = {i["name"]: (i["datatype"], i["data"]) for i in key_inputs(rows)}
    features = feature_tensors(info, reference)
    script = Path(__file__).parents[2] / "testdata" / "triton_http_client.py"
    spec = {"model": MODEL, "keys": keys, "features": features, "id": "rest-triton-1"}
    child = subprocess.run(
        [str(client_python()), str(script), f"127.0.0.1:{served.running.http_port}",
         json.dumps(spec)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout)
    assert out["live"] and out["ready"] and out["model_ready"] and out["version_ready"]
    assert out["unknown_ready"] is False
    meta = out["metadata"]
    assert meta["name"] == MODEL and "1" in meta["versions"]
    assert {"name": "category", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    assert meta["properties"]["parity.entity_keys"] == "user_id:INT64,merchant_id:INT64"
    assert out["server"]["name"] == "parity"
    expected = [p["score"] for p in reference]
    for way in ("by_keys", "by_keys_json", "by_features"):
        assert out[way]["score"] == pytest.approx(expected), way
        assert out[way]["decision"] == [p["decision"] for p in reference], way
        assert out[way]["label"] == [int(p["label"]) for p in reference], way
        assert out[way]["id"] == "rest-triton-1", way
    assert out["unknown_model"]["status"] == "404"
    assert "no_such_model" in out["unknown_model"]["message"]


def test_model_metadata_declares_the_entity_key_inputs_a_client_can_call_with(
    served: Served,
) -> None:
    """Discovery drives the call: the inputs ModelMetadata declares in its properties are
    enough for an inference, over gRPC and over REST alike."""
    with grpc.insecure_channel(served.target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=MODEL), timeout=10)
    status, _, body = call(served, "GET", f"/v2/models/{MODEL}/versions/1")
    assert status == 200
    rest_meta = json.loads(body)
    assert dict(meta.properties) == rest_meta["properties"]
    assert rest_meta["inputs"] == [
        {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs
    ]
    declared = [
        tuple(item.split(":"))
        for key in ("parity.entity_keys", "parity.request_data")
        for item in meta.properties[key].split(",")
    ]
    row = recent_rows(served, 1)[0]
    given = {**row["entity_keys"], **row["request_data"]}
    inputs = [{"name": n, "datatype": t, "shape": [1], "data": [given[n]]} for n, t in declared]
    status, _, doc = infer(served, {"inputs": inputs})
    assert status == 200, doc
    with PredictionClient(served.target) as client:
        expected = client.predict(MODEL, [row])[0]["score"]
    assert outputs_of(doc)["score"] == [pytest.approx(expected)]


# --------------------------------------------------------------- the same answers as gRPC


def test_rest_answers_equal_grpc_answers_json_and_binary(served: Served) -> None:
    rows = recent_rows(served, 5)
    inputs = key_inputs(rows)
    expected = grpc_infer(served, inputs, id="same-1")
    grpc_out = {
        o.name: list(getattr(o.contents, {"FP64": "fp64_contents", "INT64": "int64_contents",
                                          "BYTES": "bytes_contents"}[o.datatype]))
        for o in expected.outputs
    }  # fmt: skip
    status, head, doc = infer(served, {"id": "same-1", "inputs": inputs})
    assert status == 200 and head["x-request-id"] == "same-1"
    assert (doc["model_name"], doc["model_version"], doc["id"]) == (MODEL, "1", "same-1")
    out = outputs_of(doc)
    assert out["score"] == pytest.approx(grpc_out["score"], rel=1e-12)
    assert out["label"] == grpc_out["label"]
    assert out["decision"] == [d.decode() for d in grpc_out["decision"]]
    assert [o["shape"] for o in doc["outputs"]] == [[5]] * 4
    # The binary extension: inputs raw after the JSON, outputs asked back raw.
    blobs, specs = [], []
    for spec in inputs:
        dtype = "<q" if spec["datatype"] == "INT64" else "<d"
        blob = b"".join(struct.pack(dtype, v) for v in spec["data"])
        blobs.append(blob)
        specs.append({k: spec[k] for k in ("name", "datatype", "shape")}
                     | {"parameters": {"binary_data_size": len(blob)}})  # fmt: skip
    head_json = json.dumps(
        {
            "inputs": specs,
            "outputs": [
                {"name": "score", "parameters": {"binary_data": True}},
                {"name": "decision"},
            ],
        }
    ).encode()
    length = {"Inference-Header-Content-Length": str(len(head_json))}
    status, head, raw = infer(served, head_json + b"".join(blobs), **length)
    assert status == 200, raw
    json_length = int(head["inference-header-content-length"])
    doc = json.loads(raw[:json_length])
    assert [o["name"] for o in doc["outputs"]] == ["score", "decision"]
    score_size = doc["outputs"][0]["parameters"]["binary_data_size"]
    scores = struct.unpack(f"<{score_size // 8}d", raw[json_length : json_length + score_size])
    assert list(scores) == pytest.approx(grpc_out["score"], rel=1e-12)
    assert doc["outputs"][1]["data"] == [d.decode() for d in grpc_out["decision"]]
    assert json_length + score_size == len(raw)
    # Nested data and a gzip body are the same request.
    nested = [dict(s, shape=[5, 1], data=[[v] for v in s["data"]]) for s in inputs]
    status, _, doc = infer(served, gzip.compress(json.dumps({"inputs": nested}).encode()),
                           **{"Content-Encoding": "gzip"})  # fmt: skip
    assert status == 200, doc
    assert outputs_of(doc)["score"] == pytest.approx(grpc_out["score"], rel=1e-12)


def test_rest_predictions_are_logged_like_grpc_ones(served: Served) -> None:
    rows = recent_rows(served, 3)
    status, _, _ = infer(served, {"id": "rest-logged-7", "inputs": key_inputs(rows)})
    assert status == 200
    served.running.prediction_log.flush()
    import duckdb

    found = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{served.workspace.data}/predictions/**/*.parquet',"
        " union_by_name=true) WHERE __request_id = 'rest-logged-7'"
    ).fetchone()
    assert found == (3,)


# --------------------------------------------------------------- errors


BAD_REQUESTS: dict[str, tuple[str, str, bytes, dict[str, str], int, str]] = {
    "not JSON": ("POST", f"/v2/models/{MODEL}/infer", b"{inputs:", {}, 400, "not valid JSON"),
    "an array": ("POST", f"/v2/models/{MODEL}/infer", b"[]", {}, 400, "request body"),
    "no inputs": ("POST", f"/v2/models/{MODEL}/infer", b"{}", {}, 400, "inputs"),
    "unknown model": ("POST", "/v2/models/nope/infer",
                      json.dumps({"inputs": [{"name": "user_id", "datatype": "INT64",
                                              "shape": [1], "data": [1]}]}).encode(),
                      {}, 404, "nope"),
    "unknown version": ("GET", f"/v2/models/{MODEL}/versions/99", None, {}, 404, "99"),
    "text in INT64": ("POST", f"/v2/models/{MODEL}/infer",
                      json.dumps({"inputs": [{"name": "user_id", "datatype": "INT64",
                                              "shape": [1], "data": ["x"]}]}).encode(),
                      {}, 400, "inputs[0].data"),
    "unknown input": ("POST", f"/v2/models/{MODEL}/infer",
                      json.dumps({"inputs": [{"name": "colour", "datatype": "BYTES",
                                              "shape": [1], "data": ["red"]}]}).encode(),
                      {}, 400, "colour"),
    "bad header length": ("POST", f"/v2/models/{MODEL}/infer", b"{}",
                          {"Inference-Header-Content-Length": "99"}, 400,
                          "Inference-Header-Content-Length"),
    "unknown encoding": ("POST", f"/v2/models/{MODEL}/infer", b"{}",
                         {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    "not gzip": ("POST", f"/v2/models/{MODEL}/infer", b"{}", {"Content-Encoding": "gzip"},
                 400, "gzip"),
    "GET infer": ("GET", f"/v2/models/{MODEL}/infer", None, {}, 405, "GET"),
    "no such path": ("GET", "/v1/models", None, {}, 404, "/v1/models"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_client_mistakes_get_a_4xx_with_the_protocols_error_body(served: Served, case: str) -> None:
    method, path, body, headers, want, mentions = BAD_REQUESTS[case]
    status, head, raw = call(served, method, path, body, **headers)
    assert status == want, raw
    assert head["content-type"] == "application/json"
    error = json.loads(raw)["error"]
    assert isinstance(error, str) and mentions in error, error
    status, _, _ = call(served, "GET", "/v2/health/ready")
    assert status == 200


def test_a_body_over_the_limit_is_413_also_when_it_inflates_past_it(served: Served) -> None:
    big = b" " * (16 * 1024 * 1024 + 1)
    status, _, raw = call(served, "POST", f"/v2/models/{MODEL}/infer", big)
    assert status == 413 and "allowed" in json.loads(raw)["error"]
    bomb = gzip.compress(big)
    assert len(bomb) < 100_000
    status, _, raw = call(served, "POST", f"/v2/models/{MODEL}/infer", bomb,
                          **{"Content-Encoding": "gzip"})  # fmt: skip
    assert status == 413 and "inflated" in json.loads(raw)["error"]


def test_a_failed_rest_call_is_logged_and_names_its_request_id(served: Served) -> None:
    doc = {"id": "rest-bad-1", "inputs": [{"name": "user_id", "datatype": "INT64",
                                            "shape": [2], "data": [1]}]}  # fmt: skip
    status, head, body = infer(served, doc)
    assert status == 400 and "shape says 2" in body["error"]
    assert head["x-request-id"] == "rest-bad-1"
    served.running.error_log.flush()
    import duckdb

    rows = duckdb.sql(
        "SELECT rpc, requested_model, code FROM read_parquet("
        f"'{served.workspace.data}/predictions/_errors/**/*.parquet', union_by_name=true)"
        " WHERE __request_id = 'rest-bad-1'"
    ).fetchall()
    assert rows == [("ModelInfer", MODEL, "INVALID_ARGUMENT")]


# --------------------------------------------------------------- fuzz


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.text(max_size=8)
        | st.floats(allow_nan=False)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _mutated_requests() -> st.SearchStrategy[Any]:
    """Valid requests with one field replaced by anything JSON can hold."""
    good = {"id": "f", "parameters": {"explain": False},
            "inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [1]},
                       {"name": "merchant_id", "datatype": "INT64", "shape": [1], "data": [1]},
                       {"name": "amount", "datatype": "FP64", "shape": [1], "data": [1.5]},
                       {"name": "hour_of_day", "datatype": "INT64", "shape": [1], "data": [3]}],
            "outputs": [{"name": "score"}]}  # fmt: skip

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        doc = json.loads(json.dumps(good))
        where = draw(st.sampled_from(["id", "parameters", "inputs", "outputs", "input", "field"]))
        value = draw(_json_values())
        if where == "input":
            doc["inputs"][draw(st.integers(0, 3))] = value
        elif where == "field":
            tensor = doc["inputs"][draw(st.integers(0, 3))]
            tensor[draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters"]))] = (
                value
            )
        else:
            doc[where] = value
        return doc

    return mutate()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_mutated_requests() | _json_values() | st.binary(max_size=64))
def test_fuzzed_bodies_get_a_client_error_or_an_answer_never_a_5xx(
    served: Served, body: Any
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, head, answer = call(served, "POST", f"/v2/models/{MODEL}/infer", raw)
    assert status == 200 or 400 <= status < 500, (status, answer[:500])
    assert head["content-type"] == "application/json"
    doc = json.loads(answer)
    if status != 200:
        assert isinstance(doc["error"], str) and doc["error"]


def test_the_server_still_answers_after_the_fuzz(served: Served) -> None:
    status, _, doc = infer(served, {"inputs": key_inputs(recent_rows(served, 2))})
    assert status == 200 and len(outputs_of(doc)["score"]) == 2


# --------------------------------------------------------------- concurrency and shutdown


def test_concurrent_rest_calls_get_their_own_answers(served: Served) -> None:
    """Calls waiting together are scored in shared runs; each still gets its own rows' scores
    (those gRPC gives for the same rows one at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    rows = recent_rows(served, 24)
    with PredictionClient(served.target) as client:
        alone = {i: client.predict(MODEL, [row])[0]["score"] for i, row in enumerate(rows)}

    def one(i: int) -> tuple[int, Any]:
        status, _, doc = infer(served, {"id": f"c{i}", "inputs": key_inputs([rows[i]])})
        assert status == 200, doc
        return i, doc

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(one, range(24)))
    for i, doc in answers:
        assert doc["id"] == f"c{i}"
        assert outputs_of(doc)["score"] == [pytest.approx(alone[i], rel=1e-12)]


def test_stopping_drains_rest_calls_in_flight_and_logs_every_answer(
    served: Served, tmp_path: Path
) -> None:
    import shutil
    import threading

    from framework.logs.reader import read_log
    from framework.registry.model_registry import ModelRegistry
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    root = tmp_path / "ws"
    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    running = start_server(
        served.store, ModelRegistry(root / "data" / "models"), root / "data",
        ServeSettings(port=0, http_port=0, log_flush_seconds=5), clock=served.now.timestamp,
    )  # fmt: skip
    body = json.dumps({"inputs": key_inputs(recent_rows(served, 50))}).encode()
    first, answered, refused = threading.Event(), [], []

    def client(n: int) -> None:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", running.http_port, timeout=30)
                conn.request("POST", f"/v2/models/{MODEL}/infer", body)
                response = conn.getresponse()
                doc = json.loads(response.read())
                conn.close()
            except OSError:
                refused.append(n)  # the listener closed: calls after the stop are refused
                return
            if response.status != 200:
                refused.append(n)
                return
            answered.append(doc["id"])
            first.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    assert first.wait(60)
    running.stop(5)
    for t in threads:
        t.join(60)
    assert answered and len(refused) == 8
    logged = read_log(root / "data" / "predictions", MODEL)["__request_id"].to_pylist()
    assert Counter(logged) == {rid: 50 for rid in answered}


def test_features_sent_as_json_with_null_for_missing_values_score_as_predict(
    served: Served,
) -> None:
    """Plain model serving over strict JSON: a feature without a value is ``null`` (JSON has
    no NaN); the scores equal Predict's, which read the same vectors from the store."""
    rows = recent_rows(served, 8)
    with PredictionClient(served.target) as client:
        reference = client.predict(MODEL, rows, return_features=True)
        info = client.model_info(MODEL)
    inputs = []
    for f in info["features"]:
        values = [p["features"][f["name"]] for p in reference]
        datatype = "BYTES" if f["dtype"] == "String" else "FP64"
        inputs.append({"name": f["name"], "datatype": datatype, "shape": [8], "data": values})
    assert any(None in i["data"] for i in inputs if i["datatype"] == "FP64")  # exercised
    body = json.dumps({"inputs": inputs}, allow_nan=False).encode()
    status, _, doc = infer(served, body, path=f"/v2/models/{MODEL}/versions/1/infer")
    assert status == 200, doc
    assert outputs_of(doc)["score"] == pytest.approx([p["score"] for p in reference], rel=1e-12)
