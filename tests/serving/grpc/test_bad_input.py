"""Bad input against both gRPC services, over a real socket.

Every answer to a client's mistake is ``OK`` or a client-error status with a message
(never ``INTERNAL`` or ``UNKNOWN``), the server never goes down, and a valid request
gets the same answer after the abuse as before it. Requests come from Hypothesis
(:mod:`tests.strategies`), from raw bytes that are not protobuf at all, from messages
larger than the server accepts, and from many threads at once.

Unparseable bytes are refused by grpcio itself, before any parity code runs: with
the generated ``add_*_to_server`` registration grpcio answers ``INTERNAL``
"Exception deserializing request!" (``grpc/_server.py``, ``_receive_message``).
:func:`serving.grpc.servicers.add_to_server` registers the same servicers with a
deserializer that cannot fail, so such bytes are answered ``INVALID_ARGUMENT``
naming the message type; both are pinned down here.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any
from unittest import mock

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from serving.stubs.parity.v1 import prediction_pb2 as pb
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc
from tests import strategies as gen
from tests.support.fraud_requests import proto_row, recent_rows
from tests.support.services import wait_until
from tests.support.workspaces import Served

pytestmark = pytest.mark.integration
MODEL = "fraud_model"
S = grpc.StatusCode
#: A client's mistake is answered with one of these (or OK), never INTERNAL or UNKNOWN.
CLIENT_ERRORS = {
    S.INVALID_ARGUMENT, S.NOT_FOUND, S.FAILED_PRECONDITION, S.OUT_OF_RANGE,
    S.RESOURCE_EXHAUSTED, S.UNAUTHENTICATED, S.PERMISSION_DENIED,
}  # fmt: skip
OUTPUTS = ["score", "label", "confidence", "decision"]
EXPLANATION_OUTPUTS = ["attribution_features", "base_value", "attributions"]
#: (rpc, status) -> count over this module's run; printed by the last test (-s).
SEEN: Counter[tuple[str, str]] = Counter()
FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example
    ],
)  # fmt: skip

# Services and methods, from the descriptors: (path, rpc name, request class).
METHODS = [
    (f"/{service.full_name}/{m.name}", m.name, GetMessageClass(m.input_type))
    for service in (
        pb.DESCRIPTOR.services_by_name["PredictionService"],
        v2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    )
    for m in service.methods
]


def client_answer(call: Callable[..., Any], request: Any, rpc: str) -> Any:
    """Call; the response, or the status of a client error (anything else fails the test)."""
    try:
        response = call(request, timeout=60)
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
        SEEN[(rpc, code.name)] += 1
        shown = str(request)[:2_000] if not isinstance(request, bytes) else request[:200]
        assert code in CLIENT_ERRORS, f"{rpc} answered {code.name} {details!r} to {shown!r}"
        assert details.strip(), f"{rpc} answered {code.name} without a message"
        # The server's own answer, not the transport's: a status that does not fit in a
        # trailer is replaced by RESOURCE_EXHAUSTED "received metadata size exceeds...".
        assert "metadata size" not in details, details
        return code
    SEEN[(rpc, "OK")] += 1
    return response


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def contract(served: Served) -> dict[str, Any]:
    """What a valid request holds: entity keys, request fields, features with dtypes."""
    ref = served.running.predictor.resolve(MODEL)
    loaded = served.running.predictor.load(ref)
    return {
        "ref": ref,
        "keys": dict(loaded.key_types),
        "request": dict(loaded.request_types),
        "features": {f.name: "BYTES" if f.categorical else "FP64" for f in loaded.fields},
    }


def _valid_value(kind: str) -> st.SearchStrategy[Any]:
    if kind in ("DOUBLE", "FLOAT"):
        return st.floats(0, 5_000).map(lambda v: pb.Value(double_value=v))
    return st.integers(0, 3_000).map(lambda v: pb.Value(int64_value=v))


@pytest.fixture(scope="module")
def baseline(served: Served, channel: grpc.Channel) -> Callable[[], Any]:
    """A function answering a fixed set of valid requests (both services); its first
    answer is what every later one must equal."""
    rows = recent_rows(served, 4)

    def answers() -> Any:
        predict = pb_grpc.PredictionServiceStub(channel).Predict(
            pb.PredictRequest(
                model_name=MODEL,
                request_id="baseline",
                return_features=True,
                rows=[proto_row(**r["entity_keys"], **r["request_data"]) for r in rows],
            ),
            timeout=60,
        )
        infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            _infer_by_keys(rows, "baseline"), timeout=60
        )
        return (
            [
                (p.score, p.label, p.decision, p.model_version, dict(p.features))
                for p in predict.predictions
            ],
            [(o.name, list(o.shape), str(o.contents)) for o in infer.outputs],
        )

    first = answers()
    assert len(first[0]) == 4
    return lambda: (answers(), first)


def _infer_by_keys(rows: list[dict[str, Any]], request_id: str) -> Any:
    request = v2.ModelInferRequest(model_name=MODEL, id=request_id)
    for name in ("user_id", "merchant_id", "hour_of_day"):
        t = request.inputs.add(name=name, datatype="INT64", shape=[len(rows)])
        t.contents.int64_contents.extend(
            r["entity_keys"].get(name, r["request_data"].get(name)) for r in rows
        )
    t = request.inputs.add(name="amount", datatype="FP64", shape=[len(rows)])
    t.contents.fp64_contents.extend(r["request_data"]["amount"] for r in rows)
    return request


def _infer_by_features(contract: dict[str, Any], number: float, **fields: Any) -> Any:
    """A plain-model-serving request: every feature as a [1] tensor (numbers ``number``)."""
    request = v2.ModelInferRequest(model_name=MODEL, **fields)
    for name, datatype in contract["features"].items():
        t = request.inputs.add(name=name, datatype=datatype, shape=[1])
        if datatype == "BYTES":
            t.contents.bytes_contents.append(b"x")
        else:
            t.contents.fp64_contents.append(number)
    return request


#: What the predictor's online read raises when the store does not answer in time.
STORE_TIMEOUT = TimeoutError("no answer within the budget")


def fuzz(
    served: Served,
    baseline: Callable[[], Any],
    strategy: st.SearchStrategy[Any],
    examples: int,
    check: Callable[[Any], None],
    within: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> None:
    """Run ``check`` on ``examples`` draws (``within`` a context); then the server answers
    as before, with every thread it had still alive."""
    threads = threading.enumerate()

    @settings(FUZZ, max_examples=examples)
    @given(request=strategy)
    def run(request: Any) -> None:
        check(request)

    with within():
        run()
    after, before = baseline()
    assert after == before
    dead = [t.name for t in threads if not t.is_alive()]
    assert not dead, f"threads died: {dead}"
    assert served.running.server is not None


# ------------------------------------------------------- Hypothesis: parity.v1


def test_predict_never_answers_a_client_mistake_as_a_server_error(
    served: Served, channel: grpc.Channel, contract: dict[str, Any], baseline: Any
) -> None:
    stub = pb_grpc.PredictionServiceStub(channel)
    keys = {k: _valid_value(t) for k, t in contract["keys"].items()}
    request = {k: _valid_value(t) for k, t in contract["request"].items()}
    strategy = gen.predict_requests([MODEL], keys, request, served.running.predictor.max_rows)

    def check(message: Any) -> None:
        answer = client_answer(stub.Predict, message, "Predict")
        if isinstance(answer, pb.PredictResponse):
            assert len(answer.predictions) == len(message.rows)
            assert all(p.decision != pb.DECISION_UNSPECIFIED for p in answer.predictions)

    fuzz(served, baseline, strategy, 150, check)


def test_predict_with_the_store_timing_out_never_answers_a_server_error(
    served: Served,
    channel: grpc.Channel,
    contract: dict[str, Any],
    baseline: Any,
) -> None:
    """With no online features in time every valid row is answered by the fallback model
    (on request data alone): still OK, never UNAVAILABLE for a request it can score.
    (The store's timeout is simulated: a real one depends on the machine's load.)"""
    stub = pb_grpc.PredictionServiceStub(channel)
    keys = {k: _valid_value(t) for k, t in contract["keys"].items()}
    request = {k: _valid_value(t) for k, t in contract["request"].items()}
    strategy = gen.predict_requests([MODEL], keys, request, served.running.predictor.max_rows)

    def check(message: Any) -> None:
        answer = client_answer(stub.Predict, message, "Predict (store timing out)")
        if isinstance(answer, pb.PredictResponse):
            assert {p.decision for p in answer.predictions} == {pb.FALLBACK}

    def store_timing_out() -> Any:
        return mock.patch.object(served.running.predictor, "_read", side_effect=STORE_TIMEOUT)

    fuzz(served, baseline, strategy, 60, check, within=store_timing_out)


def test_model_info_and_outcomes_never_answer_a_server_error(
    served: Served, channel: grpc.Channel, contract: dict[str, Any], baseline: Any
) -> None:
    stub = pb_grpc.PredictionServiceStub(channel)
    keys = {k: _valid_value(t) for k, t in contract["keys"].items()}
    strategy = st.one_of(gen.model_info_requests([MODEL]), gen.report_outcome_requests(keys))

    def check(message: Any) -> None:
        if isinstance(message, pb.GetModelInfoRequest):
            answer = client_answer(stub.GetModelInfo, message, "GetModelInfo")
            if isinstance(answer, pb.ModelInfo):
                assert answer.name == MODEL and answer.version == "1"
        else:
            client_answer(stub.ReportOutcome, message, "ReportOutcome")

    fuzz(served, baseline, strategy, 150, check)


# ------------------------------------------------------------ Hypothesis: V2


def test_model_infer_never_answers_a_client_mistake_as_a_server_error(
    served: Served, channel: grpc.Channel, contract: dict[str, Any], baseline: Any
) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    types = {"INT64": "INT64", "INT32": "INT32", "DOUBLE": "FP64", "FLOAT": "FP32"}
    valid = {"FP64": st.floats(0, 5_000), "FP32": st.floats(0, 5_000, width=32)}
    inputs = {
        name: (types[t], valid.get(types[t], st.integers(0, 3_000)))
        for name, t in {**contract["keys"], **contract["request"]}.items()
    }
    categories = st.sampled_from([b"grocery", b"travel", b"US", b"", b"unseen"])
    numbers = st.one_of(st.floats(0, 1_000), st.just(float("nan")))  # NaN: missing
    inputs |= {
        name: (datatype, categories if datatype == "BYTES" else numbers)
        for name, datatype in contract["features"].items()
    }
    by_keys = [*contract["keys"], *contract["request"]]
    strategy = gen.infer_requests(
        [MODEL], inputs, [by_keys, list(contract["features"])],
        OUTPUTS + EXPLANATION_OUTPUTS, served.running.predictor.max_rows,
    )  # fmt: skip

    def check(message: Any) -> None:
        answer = client_answer(stub.ModelInfer, message, "ModelInfer")
        if isinstance(answer, v2.ModelInferResponse):
            assert answer.model_name == MODEL and answer.model_version == "1"
            wanted = {o.name for o in message.outputs}
            assert {o.name for o in answer.outputs} >= (wanted or set(OUTPUTS))

    fuzz(served, baseline, strategy, 250, check)


def test_v2_model_calls_never_answer_a_server_error(
    served: Served, channel: grpc.Channel, baseline: Any
) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    strategy = st.one_of(
        gen.model_ready_requests([MODEL]),
        st.sampled_from(
            [v2.ServerLiveRequest(), v2.ServerReadyRequest(), v2.ServerMetadataRequest()]
        ),
    )

    def check(message: Any) -> None:
        rpc = type(message).__name__.removesuffix("Request")
        answer = client_answer(getattr(stub, rpc), message, rpc)
        if isinstance(answer, v2.ModelMetadataResponse):
            assert answer.name == MODEL and answer.inputs

    fuzz(served, baseline, strategy, 100, check)


# --------------------------------------------------------------- bytes on the wire


GARBAGE = {
    "invalid wire type": b"\x0f",
    "field cut short": b"\x0a\x10abc",
    "varint of 11 bytes": b"\x08" + b"\xff" * 10 + b"\x01",
    "field 1 of invalid UTF-8": b"\x0a\x02\xff\xfe",
}


def _parses(request_class: Any, data: bytes) -> bool:
    try:
        request_class.FromString(data)
    except Exception:
        return False
    return True


def _decode_error(request_class: Any, data: bytes) -> str:
    try:
        request_class.FromString(data)
    except DecodeError as exc:
        return str(exc)
    raise AssertionError(f"{len(data)} bytes parse as {request_class.DESCRIPTOR.full_name}")


def _raw_call(channel: grpc.Channel, path: str) -> Callable[..., Any]:
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


@pytest.fixture(scope="module")
def registrations(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, grpc.Channel]]:
    """Two more servers on the served predictor, their servicers registered by the
    generated ``add_*_to_server`` functions ("generated") and by
    :func:`serving.grpc.servicers.add_to_server` ("parity"): a channel to each."""
    from framework.logs.outcomes import OutcomeStore
    from serving.grpc.servicers import InferenceServicer, PredictionServicer, add_to_server

    running = served.running
    prediction = PredictionServicer(
        running.predictor, OutcomeStore(tmp_path_factory.mktemp("outcomes")), running.metrics
    )
    inference = InferenceServicer(running.predictor, running.metrics, "test")
    servers, channels = [], {}
    for how in ("generated", "parity"):
        server = grpc.server(futures.ThreadPoolExecutor(4, thread_name_prefix=f"bad-{how}"))
        if how == "generated":
            pb_grpc.add_PredictionServiceServicer_to_server(prediction, server)
            v2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
        else:
            add_to_server(server, prediction, inference)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        channels[how] = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channels
    finally:
        for ch in channels.values():
            ch.close()
        for server in servers:
            server.stop(1).wait()


@pytest.mark.parametrize("how", ["generated", "parity"])
@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_unparseable_bytes_by_registration(
    registrations: dict[str, grpc.Channel], how: str, garbage: str
) -> None:
    """grpcio's own deserializer answers INTERNAL "Exception deserializing request!" before
    parity's code runs; parity's registration answers INVALID_ARGUMENT naming the type."""
    channel = registrations[how]
    data = GARBAGE[garbage]
    for path, rpc, request_class in METHODS:
        call = _raw_call(channel, path)
        if _parses(request_class, data):  # e.g. an unknown field of an empty message
            client_answer(call, data, rpc)
            continue
        with pytest.raises(grpc.RpcError) as err:
            call(data, timeout=30)
        if how == "generated":
            assert err.value.code() == S.INTERNAL, rpc
            assert err.value.details() == "Exception deserializing request!", rpc
        else:
            assert err.value.code() == S.INVALID_ARGUMENT, rpc
            # protobuf's own reason: "Error parsing message with type 'T'", and since
            # protobuf 7 (upb) the cause after it (": Wire format was corrupt").
            name = request_class.DESCRIPTOR.full_name
            reason = _decode_error(request_class, data)
            assert reason.startswith(f"Error parsing message with type '{name}'"), reason
            assert err.value.details() == (
                f"request: {len(data)} bytes that are not a valid {name} message ({reason})."
            )
    # Still serving, either way.
    live = v2_grpc.GRPCInferenceServiceStub(channel).ServerLive(v2.ServerLiveRequest())
    assert live.live


def test_served_server_survives_unparseable_bytes(
    served: Served, channel: grpc.Channel, baseline: Any
) -> None:
    """The real server registers with add_to_server: unparseable bytes are the client's
    mistake, INVALID_ARGUMENT naming the message type, never grpcio's INTERNAL."""
    known: set[tuple[Any, str]] = set()
    for data in GARBAGE.values():
        for path, rpc, request_class in METHODS:
            if _parses(request_class, data):
                client_answer(_raw_call(channel, path), data, rpc)
                continue
            with pytest.raises(grpc.RpcError) as err:
                _raw_call(channel, path)(data, timeout=30)
            answer = (err.value.code(), err.value.details() or "")
            assert answer in known or (
                answer[0] == S.INVALID_ARGUMENT and answer[1].startswith("request: ")
            ), answer
    after, before = baseline()
    assert after == before


@pytest.mark.parametrize("path_rpc_class", METHODS, ids=[m[1] for m in METHODS])
def test_random_bytes_get_a_client_answer_with_parity_registration(
    registrations: dict[str, grpc.Channel], path_rpc_class: tuple[str, str, Any]
) -> None:
    channel = registrations["parity"]
    path, rpc, request_class = path_rpc_class
    call = _raw_call(channel, path)

    @settings(FUZZ, max_examples=25)
    @given(data=st.binary(max_size=64))
    def run(data: bytes) -> None:
        client_answer(call, data, rpc)

    run()


def _unknown_fields() -> bytes:
    """Fields numbered 99 (varint), 100 (bytes), 101 (fixed64), 102 (fixed32)."""
    return (
        b"\x98\x06\x2a"  # 99: varint 42
        + b"\xa2\x06\x03abc"  # 100: length-delimited
        + b"\xa9\x06" + b"\x01" * 8  # 101: fixed64
        + b"\xb5\x06" + b"\x02" * 4  # 102: fixed32
    )  # fmt: skip


def test_unknown_fields_are_accepted_and_ignored(
    served: Served, channel: grpc.Channel, contract: dict[str, Any]
) -> None:
    rows = recent_rows(served, 2)
    predict = pb.PredictRequest(
        model_name=MODEL,
        request_id="unknown-fields",
        rows=[proto_row(**r["entity_keys"], **r["request_data"]) for r in rows],
    )
    expected = pb_grpc.PredictionServiceStub(channel).Predict(predict, timeout=60)
    # Unknown fields at the top, inside each Row and inside a Value (appended to a
    # message's bytes, a field merges into it: a Row is field 5 of PredictRequest).
    row_extra = pb.PredictRequest()
    for r in rows:
        row = proto_row(**r["entity_keys"], **r["request_data"])
        inner = row.SerializeToString() + _unknown_fields()
        row_extra.MergeFromString(b"\x2a" + _varint(len(inner)) + inner)
    data = (
        pb.PredictRequest(model_name=MODEL, request_id="unknown-fields").SerializeToString()
        + _unknown_fields()
        + row_extra.SerializeToString()
    )
    answer = pb.PredictResponse.FromString(
        _raw_call(channel, "/parity.v1.PredictionService/Predict")(data, timeout=60)
    )
    assert [(p.score, p.decision) for p in answer.predictions] == [
        (p.score, p.decision) for p in expected.predictions
    ]
    infer = _infer_by_keys(rows, "unknown-fields")
    typed = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer, timeout=60)
    raw = _raw_call(channel, "/inference.GRPCInferenceService/ModelInfer")(
        infer.SerializeToString() + _unknown_fields(), timeout=60
    )
    assert v2.ModelInferResponse.FromString(raw) == typed
    for path, _, request_class in METHODS:
        if request_class().DESCRIPTOR.fields:
            continue
        _raw_call(channel, path)(_unknown_fields(), timeout=30)  # empty requests: OK


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def test_duplicate_map_keys_on_the_wire_last_one_wins(
    served: Served, channel: grpc.Channel
) -> None:
    """A map may carry a key twice on the wire (protobuf: the last entry wins); the answer
    is the one for the last value, and a wrong-typed duplicate is a clear client error."""
    first, second = recent_rows(served, 2)
    stub = pb_grpc.PredictionServiceStub(channel)
    call = _raw_call(channel, "/parity.v1.PredictionService/Predict")
    expected = stub.Predict(
        pb.PredictRequest(
            model_name=MODEL, rows=[proto_row(**second["entity_keys"], **second["request_data"])]
        ),
        timeout=60,
    )
    # Row bytes of `first` followed by those of `second`: every map key given twice.
    row = (
        proto_row(**first["entity_keys"], **first["request_data"]).SerializeToString()
        + proto_row(**second["entity_keys"], **second["request_data"]).SerializeToString()
    )
    head = pb.PredictRequest(model_name=MODEL).SerializeToString()
    answer = pb.PredictResponse.FromString(
        call(head + b"\x2a" + _varint(len(row)) + row, timeout=60)
    )
    assert [p.score for p in answer.predictions] == [p.score for p in expected.predictions]
    wrong = row + pb.Row(entity_keys={"user_id": pb.Value(string_value="7")}).SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        call(head + b"\x2a" + _varint(len(wrong)) + wrong, timeout=60)
    assert err.value.code() == S.INVALID_ARGUMENT
    assert "rows[0].entity_keys: entity key 'user_id' must be INT64" in (err.value.details() or "")


# ---------------------------------------------------------------- oversized


def test_oversized_messages_are_resource_exhausted(
    served: Served, channel: grpc.Channel, baseline: Any
) -> None:
    from serving.grpc.settings import ServeSettings

    limit = ServeSettings().max_message_bytes  # serve_workspace keeps the default
    big = "x" * (limit + 1)
    calls = [
        (pb_grpc.PredictionServiceStub(channel).Predict,
         pb.PredictRequest(model_name=MODEL, request_id=big)),
        (pb_grpc.PredictionServiceStub(channel).ReportOutcome,
         pb.ReportOutcomeRequest(request_id=big, label=1.0)),
        (v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer,
         v2.ModelInferRequest(model_name=MODEL, raw_input_contents=[big.encode()])),
    ]  # fmt: skip
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=60)
        assert err.value.code() == S.RESOURCE_EXHAUSTED
        assert "larger than max" in (err.value.details() or "")
    after, before = baseline()
    assert after == before


# ------------------------------------------------------------------ concurrency


def test_concurrent_bad_requests_do_not_disturb_good_ones(
    served: Served, channel: grpc.Channel, contract: dict[str, Any]
) -> None:
    rows = recent_rows(served, 6)
    predict = pb_grpc.PredictionServiceStub(channel).Predict
    infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    good = []
    for i in range(1, 7):
        request = pb.PredictRequest(
            model_name=MODEL,
            rows=[proto_row(**r["entity_keys"], **r["request_data"]) for r in rows[:i]],
        )
        good.append(("Predict", predict, request))
        good.append(("ModelInfer", infer, _infer_by_keys(rows[:i], f"good-{i}")))
    expected = [_comparable(call(request, timeout=60)) for _, call, request in good]
    too_many = served.running.predictor.max_rows + 1
    one = proto_row(**GOOD)
    bad = [
        ("Predict", predict, pb.PredictRequest(model_name="no\x00such", rows=[one])),
        ("Predict", predict, pb.PredictRequest(model_name=MODEL, request_id="é", rows=[])),
        ("Predict", predict, pb.PredictRequest(model_name=MODEL, rows=[one] * too_many)),
        ("Predict", predict,
         pb.PredictRequest(model_name=MODEL, rows=[proto_row(**GOOD | {"user_id": "x" * 20_000})])),
        ("Predict", predict,
         pb.PredictRequest(model_name=MODEL, rows=[proto_row(**{**GOOD, "amount": 2**60})])),
        ("ModelInfer", infer, _infer_by_features(contract, float("inf"))),
        ("ModelInfer", infer, v2.ModelInferRequest(model_name=MODEL)),
        ("ReportOutcome", pb_grpc.PredictionServiceStub(channel).ReportOutcome,
         pb.ReportOutcomeRequest(request_id="x", label=1, event_time=Timestamp(seconds=2**62))),
    ] + [
        (rpc, _raw_call(channel, path), data)
        for data in GARBAGE.values()
        for path, rpc, cls in METHODS
        if rpc in ("Predict", "ModelInfer") and not _parses(cls, data)
    ]  # fmt: skip
    jobs = [("good", i) for i in range(len(good))] * 12 + [("bad", i) for i in range(len(bad))] * 8
    order = np.random.default_rng(7).permutation(len(jobs))

    def run(job: tuple[str, int]) -> None:
        kind, i = job
        if kind == "good":
            _, call, request = good[i]
            assert _comparable(call(request, timeout=60)) == expected[i]
        else:
            rpc, call, request = bad[i]
            try:
                call(request, timeout=60)
            except grpc.RpcError as err:
                code = err.code()
                assert code in CLIENT_ERRORS, (code, err.details())
            else:
                pytest.fail(f"{rpc} accepted a bad request")

    with futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(run, [jobs[k] for k in order]))
    assert len(jobs) == 12 * len(good) + 8 * len(bad)


def _comparable(response: Any) -> Any:
    if isinstance(response, pb.PredictResponse):
        return [(p.score, p.label, p.decision, p.model_version) for p in response.predictions]
    return [(o.name, str(o.contents)) for o in response.outputs]


# -------------------------------------------------------- regressions, one by one

GOOD = {"user_id": 1, "merchant_id": 1, "amount": 10.0, "hour_of_day": 3}


def _keys_infer(**override: tuple[str, str, list[Any]]) -> Any:
    """A by-keys ModelInfer of one row, with some inputs replaced: name=(datatype, field,
    values)."""
    request = v2.ModelInferRequest(model_name=MODEL)
    spec = {
        "user_id": ("INT64", "int64_contents", [1]),
        "merchant_id": ("INT64", "int64_contents", [1]),
        "amount": ("FP64", "fp64_contents", [10.0]),
        "hour_of_day": ("INT64", "int64_contents", [3]),
        **override,
    }
    for name, (datatype, field, values) in spec.items():
        t = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        getattr(t.contents, field).extend(values)
    return request


def _with(request: Any, change: Callable[[Any], Any]) -> Any:
    change(request)
    return request


def _both_ways(request: Any) -> Any:
    """Every input typed and raw at once."""
    for t in request.inputs:
        dtype = "<i8" if t.datatype == "INT64" else "<f8"
        values = t.contents.int64_contents or t.contents.fp64_contents
        request.raw_input_contents.append(np.asarray(values, dtype=dtype).tobytes())
    return request


def _raw_bool(request: Any) -> Any:
    request.inputs.add(name="flag", datatype="BOOL", shape=[1])
    for t in request.inputs[:-1]:
        dtype = "<i8" if t.datatype == "INT64" else "<f8"
        values = list(t.contents.int64_contents or t.contents.fp64_contents)
        t.ClearField("contents")
        request.raw_input_contents.append(np.asarray(values, dtype=dtype).tobytes())
    request.raw_input_contents.append(b"\x02")
    return request


# (rpc, request, words the message must hold). Each was answered INTERNAL (or the
# transport's RESOURCE_EXHAUSTED) before the fix named in the comment.
REGRESSIONS: dict[str, tuple[str, Any, str]] = {
    # Predictor.resolve: a name reached os.stat before its check (ValueError, OSError).
    "NUL in model_name": ("Predict", lambda c: pb.PredictRequest(
        model_name="a\x00b", rows=[proto_row(**GOOD)]), "model_name: Model names start"),
    "model_name too long for a path": ("Predict", lambda c: pb.PredictRequest(
        model_name="a" * 300, rows=[proto_row(**GOOD)]), "model_name: Model names start"),
    "GetModelInfo NUL name": ("GetModelInfo", lambda c: pb.GetModelInfoRequest(
        model_name="\x00"), "model_name"),
    "ModelReady NUL name": ("ModelReady", lambda c: v2.ModelReadyRequest(
        name="x\x00"), "model_name"),
    "ModelMetadata long name": ("ModelMetadata", lambda c: v2.ModelMetadataRequest(
        name="a" * 300), "model_name"),
    "ModelInfer NUL name": ("ModelInfer", lambda c: _with(
        _keys_infer(), lambda r: setattr(r, "model_name", "\x00")), "model_name"),
    "model_version of 40 digits": ("Predict", lambda c: pb.PredictRequest(
        model_name=MODEL, model_version="9" * 40, rows=[proto_row(**GOOD)]), "model_version"),
    # _check_fields: an integer past 2**53 for a DOUBLE failed in the online read, which
    # was then taken for an unavailable store (UNAVAILABLE).
    "integer past 2**53 for a DOUBLE": ("Predict", lambda c: pb.PredictRequest(
        model_name=MODEL, rows=[proto_row(**{**GOOD, "amount": 2**63 - 1})]),
        "request field 'amount': the integer 9223372036854775807 has no exact DOUBLE"),
    # _check_fields: UINT64 past INT64 (OverflowError in pyarrow).
    "UINT64 entity key past INT64": ("ModelInfer", lambda c: _keys_infer(
        user_id=("UINT64", "uint64_contents", [2**64 - 1])),
        "entity key 'user_id': 18446744073709551615 is outside the INT64 range"),
    "UINT64 request field past INT64": ("ModelInfer", lambda c: _keys_infer(
        hour_of_day=("UINT64", "uint64_contents", [2**63])),
        "request field 'hour_of_day': 9223372036854775808 is outside the INT64 range"),
    # ReportOutcome: Timestamp.ToDatetime raised ValueError.
    "event_time past year 9999": ("ReportOutcome", lambda c: pb.ReportOutcomeRequest(
        request_id="x", label=1.0, event_time=Timestamp(seconds=2**62)), "event_time"),
    "event_time with negative nanos": ("ReportOutcome", lambda c: pb.ReportOutcomeRequest(
        request_id="x", label=1.0, event_time=Timestamp(seconds=1, nanos=-5)), "event_time"),
    # predict_features: inf reached the model (ValueError), a UINT64 pyarrow (ArrowInvalid).
    "inf feature": ("ModelInfer", lambda c: _infer_by_features(c, float("inf")),
                    "must be numbers (NaN: missing; finite), got inf"),
    "inf feature, explained": ("ModelInfer", lambda c: _with(
        _infer_by_features(c, float("-inf")),
        lambda r: r.parameters["explain"].CopyFrom(v2.InferParameter(bool_param=True))),
        "got -inf"),
    "UINT64 feature past 2**53": ("ModelInfer", lambda c: _with(
        _infer_by_features(c, 1.0), lambda r: _uint64_feature(r)), "18446744073709551615"),
    # decode_inputs: typed contents beside raw ones were silently ignored (answered OK).
    "contents and raw_input_contents": ("ModelInfer", lambda c: _both_ways(_keys_infer()),
                                        "send each input one way"),
    # decode_inputs: INT8 in int_contents out of range; raw BOOL bytes other than 0/1.
    "INT8 value 1000": ("ModelInfer", lambda c: _keys_infer(
        hour_of_day=("INT8", "int_contents", [1000])), "1000 is outside the range of INT8"),
    "raw BOOL byte 2": ("ModelInfer", lambda c: _raw_bool(_keys_infer()), "BOOL bytes are 0 or 1"),
    # ModelInfer: an unknown output is refused before scoring (nothing logged).
    "unknown output": ("ModelInfer", lambda c: _with(
        _keys_infer(), lambda r: r.outputs.add(name="nope")), "unknown output 'nope'"),
}  # fmt: skip


def _uint64_feature(request: Any) -> None:
    t = next(t for t in request.inputs if t.datatype == "FP64")
    t.datatype = "UINT64"
    t.contents.ClearField("fp64_contents")
    t.contents.uint64_contents.append(2**64 - 1)


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_regression(channel: grpc.Channel, contract: dict[str, Any], case: str) -> None:
    rpc, build, words = REGRESSIONS[case]
    stub = (
        pb_grpc.PredictionServiceStub(channel)
        if rpc in ("Predict", "GetModelInfo", "ReportOutcome")
        else v2_grpc.GRPCInferenceServiceStub(channel)
    )
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, rpc)(build(contract), timeout=60)
    assert err.value.code() == S.INVALID_ARGUMENT, err.value.details()
    assert words in (err.value.details() or "")


@pytest.mark.parametrize(
    "request_id",
    ["é", "a\nb", "x" * 100_000, "ok-id"],
    ids=["non-ascii", "newline", "huge", "plain"],
)
def test_failed_call_trailer_carries_a_request_id_a_header_can_hold(
    channel: grpc.Channel, request_id: str
) -> None:
    """The request id goes back in the ``x-request-id`` trailer of a failed prediction
    call; one a header cannot carry (non-ASCII, control characters, huge) made the call
    fail with INTERNAL "Invalid metadata" or the transport's RESOURCE_EXHAUSTED. Now the
    server logs and answers such a call under an id of its own."""
    stub = pb_grpc.PredictionServiceStub(channel)
    for call, request in [
        (stub.Predict, pb.PredictRequest(model_name=MODEL, request_id=request_id, rows=[])),
        (v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer,
         v2.ModelInferRequest(model_name=MODEL, id=request_id)),
    ]:  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=60)
        assert err.value.code() == S.INVALID_ARGUMENT, err.value.details()
        trailer = dict(err.value.trailing_metadata() or ())["x-request-id"]
        if request_id == "ok-id":
            assert trailer == "ok-id"
        else:
            assert trailer != request_id and len(trailer) == 32, trailer
            assert set(trailer) <= set("0123456789abcdef"), trailer  # a uuid4 hex of its own


def test_long_error_messages_are_clipped_keeping_field_and_reason(channel: grpc.Channel) -> None:
    """A message echoing a huge value did not fit in the status trailer: the client got
    RESOURCE_EXHAUSTED "Stream removed (received metadata size exceeds hard limit)"."""
    stub = pb_grpc.PredictionServiceStub(channel)
    for value in ("c" * 100_000, "é" * 100_000):
        row = proto_row(**{**GOOD, "user_id": value})
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(pb.PredictRequest(model_name=MODEL, rows=[row]), timeout=60)
        details = err.value.details() or ""
        assert err.value.code() == S.INVALID_ARGUMENT
        assert len(details.encode()) <= 1_000
        assert details.startswith("rows[0].entity_keys: entity key 'user_id' must be INT64")
        assert "characters elided" in details
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelInfo(pb.GetModelInfoRequest(model_name="m" * 100_000), timeout=60)
    assert err.value.code() == S.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("model_name: Model names start")


def test_fallback_scores_any_valid_int64_request_field(
    served: Served, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An INT64 request field past 2**53 (valid) broke the fallback's float column
    (ArrowInvalid), so a request the store could not serve in time was answered
    UNAVAILABLE "the fallback could not answer either"; found under CPU load."""
    monkeypatch.setattr(served.running.predictor, "_read", mock.Mock(side_effect=STORE_TIMEOUT))
    stub = pb_grpc.PredictionServiceStub(channel)
    for hour in (2**62, -(2**63), 3):
        row = proto_row(**{**GOOD, "hour_of_day": hour})
        answer = stub.Predict(pb.PredictRequest(model_name=MODEL, rows=[row]), timeout=60)
        assert answer.predictions[0].decision == pb.FALLBACK
        assert "fallback model on amount, hour_of_day" in answer.predictions[0].reasons


def test_unknown_model_names_add_no_metric_series(served: Served, channel: grpc.Channel) -> None:
    """The requests counter is labelled by model: a label per made-up name let any client
    grow the server's memory (and the metrics page) without bound."""
    stub = pb_grpc.PredictionServiceStub(channel)
    names = [f"made_up_{i}" for i in range(20)]
    for name in names:
        with pytest.raises(grpc.RpcError):
            stub.GetModelInfo(pb.GetModelInfoRequest(model_name=name), timeout=30)
    labels = {
        sample.labels.get("model")
        for metric in served.running.metrics.requests.collect()
        for sample in metric.samples
    }
    assert not labels & set(names)
    assert "" in labels  # counted, without the name


def test_unknown_output_fails_before_any_prediction_is_logged(
    served: Served, channel: grpc.Channel
) -> None:
    from framework.logs.reader import read_log

    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    request = _with(_keys_infer(), lambda r: r.outputs.add(name="nope"))
    request.id = "unknown-output-call"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=60)
    assert err.value.code() == S.INVALID_ARGUMENT
    after = _keys_infer()
    after.id = "after-unknown-output-call"
    stub.ModelInfer(after, timeout=60)
    root = served.workspace.data / "predictions"

    def logged_ids() -> set[str]:
        logged = read_log(root, MODEL)
        return set(logged["__request_id"].to_pylist()) if logged.num_rows else set()

    wait_until(
        lambda: "after-unknown-output-call" in logged_ids(), deadline=20,
        what="the call after the refused one in the prediction log",
    )  # fmt: skip
    ids = logged_ids()
    assert "unknown-output-call" not in ids


def test_statuses_seen(capsys: pytest.CaptureFixture[str]) -> None:
    """The statuses this module's fuzzing saw, per RPC (printed; run with -s): never
    INTERNAL or UNKNOWN. Skipped when no fuzzing ran before it in this session."""
    if not SEEN:
        pytest.skip("no fuzzing test ran before this one")
    with capsys.disabled():
        print("\nstatuses seen (rpc, code: count):")
        for (rpc, code), count in sorted(SEEN.items()):
            print(f"  {rpc:14s} {code:20s} {count}")
    assert all(code not in ("INTERNAL", "UNKNOWN") for _, code in SEEN)
