"""The gRPC servicers: thin translations between protobuf and the predictor.

Each RPC converts its request to predictor types, calls the predictor, and
converts back; every exception is mapped to one status code by
:func:`serving.grpc.status.status_of` in :func:`_rpc` (the one place that aborts),
and counted in the metrics. A client's mistake is never answered ``INTERNAL``.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass

from framework.logs.failed_requests import error_table
from framework.logs.outcomes import OutcomeStore
from framework.models.manifest import Manifest
from framework.registry.model_registry import ModelRef
from serving.dataplane.errors import InternalError, InvalidInput
from serving.dataplane.messages import PredictInput, PredictionOut, RowInput
from serving.dataplane.predictor import Predictor
from serving.grpc import converters
from serving.grpc.metrics import ServerMetrics
from serving.grpc.status import status_of
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from serving.stubs.parity.v1 import prediction_pb2 as pb
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

log = logging.getLogger("parity.serving")
R = TypeVar("R")
SERVER_NAME = "parity"


def _rpc(name: str, *, predicts: bool = False) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Run an RPC: map errors to statuses (abort), count requests, log with the request id.

    Every call is logged as one structured record (rpc, code, model, version,
    request id, seconds): failures at INFO (ERROR for INTERNAL), successes at DEBUG.
    A failed prediction call (``predicts``) also goes to the error log
    (:mod:`framework.logs.failed_requests`), where ``parity monitor`` counts it; the
    client gets the request id it was logged under as ``x-request-id`` in the
    trailing metadata.
    """

    def wrap(method: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(method)
        def handler(self: Any, request: Any, context: grpc.ServicerContext) -> R:
            started = time.perf_counter()
            model = getattr(request, "model_name", "") or getattr(request, "name", "")
            request_id = getattr(request, "request_id", "") or getattr(request, "id", "")
            record = {"rpc": name, "model": _clip(model, 200), "request_id": request_id}
            received = self.predictor.clock() if predicts else 0.0

            def fail(code: grpc.StatusCode, message: str) -> None:
                seconds = time.perf_counter() - started
                record.update(code=code.name, seconds=seconds)
                # A metric label per model the registry has: a client's made-up names
                # must not grow the metrics without bound.
                label = model if model in self.predictor.registry.names() else ""
                self.metrics.requests.labels(name, code.name, label, "").inc()
                if predicts:
                    # The id goes back as a header, so only one a header can carry: else
                    # the call is logged (and answered) under an id of the server's.
                    if not HEADER_SAFE.fullmatch(str(record["request_id"])):
                        record["request_id"] = uuid.uuid4().hex
                    context.set_trailing_metadata((("x-request-id", record["request_id"]),))
                    self.log_error(
                        error_table(
                            rpc=name, model=_clip(model, 200),
                            version=_clip(_requested_version(request), 200),
                            request_id=record["request_id"], code=code.name, message=message,
                            received=received, seconds=seconds,
                        )
                    )  # fmt: skip

            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                fail(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed on arrival")
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed on arrival")
            try:
                if isinstance(request, Malformed):
                    raise request.error()
                result = method(self, request, context)
            except Exception as exc:
                code = status_of(exc)
                # Clipped: the status travels in a trailer, which clients cap at 8-16 KiB
                # (a longer one is lost and the call fails with RESOURCE_EXHAUSTED).
                known = code is not grpc.StatusCode.INTERNAL or isinstance(exc, InternalError)
                message = _clip(str(exc)) if known else (
                    f"internal error ({type(exc).__name__}); see the server log"
                )  # fmt: skip
                fail(code, message)
                if code is grpc.StatusCode.INTERNAL and not known:
                    log.exception("rpc failed: %s", exc, extra={"fields": record})
                else:
                    log.info(message, extra={"fields": record})
                context.abort(code, message)
            version = getattr(result, "model_version", "") or ""
            predictions = getattr(result, "predictions", None)
            if predictions:
                version = version or predictions[0].model_version
                record["request_id"] = predictions[0].request_id
            record.update(code="OK", version=version, seconds=time.perf_counter() - started)
            log.debug("ok", extra={"fields": record})
            self.metrics.child(self.metrics.requests, name, "OK", model, version).inc()
            return result

        return handler

    return wrap


#: A request id the ``x-request-id`` trailer can carry as it is (printable ASCII).
HEADER_SAFE = re.compile(r"[\x20-\x7e]{1,128}")


def _clip(text: str, limit: int = 1_000) -> str:
    """``text`` within ``limit`` UTF-8 bytes: its start and end, the middle elided."""
    if len(text.encode()) <= limit:
        return text
    keep = limit // 2
    while True:
        head, tail = text[: keep * 2 // 3], text[-(keep // 3) :]
        cut = len(text) - len(head) - len(tail)
        clipped = f"{head}... ({cut} characters elided) ...{tail}"
        if len(clipped.encode()) <= limit or keep < 8:
            return clipped
        keep //= 2


class Malformed:
    """A request whose bytes are not a valid message of its type (see :func:`add_to_server`):
    answered ``INVALID_ARGUMENT`` by :func:`_rpc` instead of grpcio's own ``INTERNAL``."""

    def __init__(self, message_type: str, size: int, reason: str) -> None:
        self.message_type, self.size, self.reason = message_type, size, reason

    def error(self) -> InvalidInput:
        return InvalidInput(
            f"request: {self.size} bytes that are not a valid {self.message_type} message "
            f"({_clip(self.reason, 200)})."
        )


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Malformed(message_class.DESCRIPTOR.full_name, len(data), str(exc))

    return deserialize


def add_to_server(server: grpc.Server, *servicers: Any) -> None:
    """Register servicers (:class:`PredictionServicer`, :class:`InferenceServicer`) like the
    generated ``add_*_to_server`` functions, except that a request whose bytes do not parse
    is answered ``INVALID_ARGUMENT`` naming the message type (grpcio's own deserializer
    answers ``INTERNAL`` "Exception deserializing request!", and logs a traceback)."""
    for servicer in servicers:
        service = next(s for base, s in _SERVICES.items() if isinstance(servicer, base))
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=_tolerant(GetMessageClass(method.input_type)),
                response_serializer=GetMessageClass(method.output_type).SerializeToString,
            )
            for method in service.methods
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )
        server.add_registered_method_handlers(service.full_name, handlers)


def _requested_version(request: Any) -> str:
    """The version or ``@alias`` a prediction request asked for, as given ('' if none)."""
    if isinstance(request, pb.PredictRequest):
        which = request.WhichOneof("model_ref")
        if which == "model_alias":
            return f"@{request.model_alias}"
        return request.model_version if which == "model_version" else ""
    return str(getattr(request, "model_version", "") or "")


def _no_error_log(table: Any) -> None:
    pass


class PredictionServicer(pb_grpc.PredictionServiceServicer):
    """``parity.v1.PredictionService``."""

    def __init__(
        self,
        predictor: Predictor,
        outcomes: OutcomeStore,
        metrics: ServerMetrics,
        log_error: Callable[[Any], None] = _no_error_log,
    ):
        self.predictor = predictor
        self.outcomes = outcomes
        self.metrics = metrics
        self.log_error = log_error

    @_rpc("Predict", predicts=True)
    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> Any:
        which = request.WhichOneof("model_ref")
        rows = [
            RowInput(
                entity_keys={k: converters.from_value(v) for k, v in row.entity_keys.items()},
                request_data={k: converters.from_value(v) for k, v in row.request_data.items()},
            )
            for row in request.rows
        ]
        outs = self.predictor.predict(
            PredictInput(
                model_name=request.model_name,
                rows=rows,
                version=request.model_version if which == "model_version" else None,
                alias=request.model_alias if which == "model_alias" else None,
                request_id=request.request_id,
                return_features=request.return_features,
                explain=request.explain,
            )
        )
        self._count(outs)
        top = request.explain_top_k
        return pb.PredictResponse(predictions=[_prediction(o, top) for o in outs])

    @_rpc("GetModelInfo")
    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> Any:
        which = request.WhichOneof("model_ref")
        ref = self.predictor.resolve(
            request.model_name,
            request.model_version if which == "model_version" else None,
            request.model_alias if which == "model_alias" else None,
        )
        loaded = self.predictor.load(ref)
        manifest = loaded.manifest
        info = pb.ModelInfo(
            name=ref.name,
            version=str(ref.version),
            aliases=self.predictor.aliases_of(ref),
            feature_service=manifest.feature_service,
            features=[pb.FeatureSpec(name=f.name, dtype=f.dtype) for f in manifest.features],
            thresholds=pb.Thresholds(
                accept=manifest.serving.accept, review=manifest.serving.review_below
            ),
            entity_keys=[pb.FeatureSpec(name=k, dtype=t) for k, t in loaded.key_types.items()],
            request_data=[pb.FeatureSpec(name=k, dtype=t) for k, t in loaded.request_types.items()],
        )
        from datetime import datetime

        info.created_at.FromDatetime(datetime.fromisoformat(manifest.created_at))
        return info

    @_rpc("ReportOutcome")
    def ReportOutcome(self, request: pb.ReportOutcomeRequest, context: grpc.ServicerContext) -> Any:
        which = request.WhichOneof("result")
        if which is None:
            raise InvalidInput("result: set either 'label' or 'outcome'.")
        event_time = _event_time(request) if request.HasField("event_time") else None
        keys = {k: converters.from_value(v) for k, v in request.entity_keys.items()}
        if not request.request_id and not (keys and event_time):
            raise InvalidInput(
                "request_id: required, unless entity_keys and event_time name the prediction."
            )
        if which == "label" and not math.isfinite(request.label):
            raise InvalidInput(f"label: must be finite, got {request.label!r}.")
        status = self.outcomes.record(
            request.request_id,
            entity_keys=keys,
            event_time=event_time,
            label=request.label if which == "label" else None,
            outcome=converters.from_value(request.outcome) if which == "outcome" else None,
            row_index=request.row_index if request.HasField("row_index") else None,
        )
        return pb.ReportOutcomeResponse(accepted=True, status=status)

    def _count(self, outs: list[PredictionOut]) -> None:
        for o in outs:
            m = self.metrics
            m.child(m.predictions, o.model_name, o.model_version, o.decision).inc()
            m.child(m.confidence, o.model_name, o.model_version).observe(o.confidence)


def _event_time(request: pb.ReportOutcomeRequest) -> Any:
    """``event_time`` as a datetime; a Timestamp outside the valid range (years 1-9999,
    nanos below a second) is the client's mistake."""
    ts = request.event_time
    try:
        return ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(
            f"event_time: not a valid time (seconds={ts.seconds}, nanos={ts.nanos}): {exc}."
        ) from None


def _prediction(o: PredictionOut, top: int = 0) -> pb.Prediction:
    p = pb.Prediction(
        request_id=o.request_id,
        row_index=o.row_index,
        model_name=o.model_name,
        model_version=o.model_version,
        score=o.score,
        label=o.label,
        confidence=o.confidence,
        decision=pb.Decision.Value(o.decision),
        reasons=o.reasons,
    )
    if o.features is not None:
        for name, value in o.features.items():
            p.features[name].CopyFrom(converters.to_value(value))
    if o.explanation is not None:
        p.base_value = o.explanation.base_value
        for a in o.explanation.top(top):
            p.attributions.add(
                feature=a.feature, contribution=a.contribution, value=converters.to_value(a.value)
            )
    return p


class InferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` (Open Inference Protocol / KServe V2).

    ``ModelInfer`` takes either every model feature as a tensor (plain model
    serving) or the entity join keys plus request-data fields as tensors, which
    the server enriches from the online store. Outputs: ``score`` (FP64),
    ``label`` (INT64 for classifiers) and ``confidence`` (FP64), plus
    ``decision`` (BYTES).
    """

    def __init__(
        self,
        predictor: Predictor,
        metrics: ServerMetrics,
        version: str,
        log_error: Callable[[Any], None] = _no_error_log,
    ):
        self.predictor = predictor
        self.metrics = metrics
        self.version = version
        self.log_error = log_error

    @_rpc("ServerLive")
    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return v2.ServerLiveResponse(live=True)

    @_rpc("ServerReady")
    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return v2.ServerReadyResponse(ready=self.predictor.ready())

    @_rpc("ModelReady")
    def ModelReady(self, request: v2.ModelReadyRequest, context: grpc.ServicerContext) -> Any:
        ref = self._ref(request.name, request.version)
        # Reported, never caused: a version loads at start-up or on its first request.
        return v2.ModelReadyResponse(ready=ref in self.predictor.versions.loaded())

    @_rpc("ServerMetadata")
    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return v2.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=[])

    @_rpc("ModelMetadata")
    def ModelMetadata(self, request: v2.ModelMetadataRequest, context: grpc.ServicerContext) -> Any:
        ref = self._ref(request.name, request.version)
        manifest = Manifest.read(self.predictor.registry, ref)
        T = v2.ModelMetadataResponse.TensorMetadata
        inputs = [
            T(name=f.name, datatype=converters.V2_DATATYPE[f.dtype], shape=[-1])
            for f in manifest.features
        ]
        outputs = [
            T(name="score", datatype="FP64", shape=[-1]),
            T(name="label", datatype="INT64", shape=[-1]),
            T(name="confidence", datatype="FP64", shape=[-1]),
            T(name="decision", datatype="BYTES", shape=[-1]),
        ]
        return v2.ModelMetadataResponse(
            name=ref.name,
            versions=[str(v) for v in self.predictor.registry.versions(ref.name)],
            platform="parity-sklearn",
            inputs=inputs,
            outputs=outputs,
            properties=input_sets(manifest),
        )

    @_rpc("ModelInfer", predicts=True)
    def ModelInfer(self, request: v2.ModelInferRequest, context: grpc.ServicerContext) -> Any:
        ref = self._ref(request.model_name, request.model_version)
        loaded = self.predictor.load(ref)
        columns, rows, raw = converters.decode_inputs(request)
        explain = converters.bool_parameter(request.parameters, "explain")
        # Checked before scoring: a call that fails logs no predictions.
        wanted = {o.name for o in request.outputs}
        known = [*_OUTPUTS, *(_EXPLANATION_OUTPUTS if explain else ())]
        unknown_out = sorted(wanted - set(known))
        if unknown_out:
            raise InvalidInput(
                f"outputs: unknown output {unknown_out[0]!r} (outputs: {', '.join(known)})."
            )
        features = {f.name for f in loaded.fields}
        keys = set(loaded.key_types) | set(loaded.request_types)
        if set(columns) & features and not set(columns) <= keys:
            outs = self.predictor.predict_features(ref, columns, request.id, explain=explain)
        else:
            given = set(columns)
            unknown = sorted(given - keys)
            if unknown:
                raise InvalidInput(
                    f"inputs[{unknown[0]!r}]: not a feature, entity key or request field of "
                    f"{ref} (send every feature, or the keys {', '.join(loaded.key_types)} "
                    f"and request data {', '.join(loaded.request_types) or 'none'})."
                )
            for k, kind in loaded.key_types.items():
                if kind == "BYTES" and k in columns:  # a V2 BYTES tensor was decoded as text
                    columns[k] = [v.encode() if isinstance(v, str) else v for v in columns[k]]
            row_inputs = [
                RowInput(
                    entity_keys={k: columns[k][i] for k in loaded.key_types if k in columns},
                    request_data={k: columns[k][i] for k in loaded.request_types if k in columns},
                )
                for i in range(rows)
            ]
            outs = self.predictor.predict(
                PredictInput(
                    model_name=ref.name,
                    version=str(ref.version),
                    rows=row_inputs,
                    request_id=request.id,
                    explain=explain,
                )
            )
        response = v2.ModelInferResponse(
            model_name=ref.name, model_version=str(ref.version), id=outs[0].request_id
        )
        tensors: list[converters.Output] = [
            ("score", "FP64", [o.score for o in outs]),
            ("label", "INT64", [int(o.label or 0) for o in outs]),
            ("confidence", "FP64", [o.confidence for o in outs]),
            ("decision", "BYTES", [o.decision for o in outs]),
        ]
        if explain:
            tensors += _explanation_tensors(outs, [f.name for f in loaded.fields])
        converters.encode_outputs(
            response, [t for t in tensors if not wanted or t[0] in wanted], raw
        )
        for o in outs:
            m = self.metrics
            m.child(m.predictions, o.model_name, o.model_version, o.decision).inc()
            m.child(m.confidence, o.model_name, o.model_version).observe(o.confidence)
        return response

    def _ref(self, name: str, version: str) -> ModelRef:
        if not name:
            raise InvalidInput("name: the model name is required.")
        return self.predictor.resolve(name, version or None, None)


def input_sets(manifest: Manifest) -> dict[str, str]:
    """The two ways ``ModelInfer`` takes a model's inputs, as the protocol's model
    ``properties`` (string to string): ``inputs`` lists the features (plain model serving);
    ``parity.entity_keys`` and ``parity.request_data`` list the other set, ``NAME:DATATYPE``
    comma-separated, with which the server reads the features from the online store."""

    def tensors(types: dict[str, str]) -> str:
        return ",".join(f"{n}:{converters.V2_DATATYPE[t]}" for n, t in types.items())

    keys = {k: manifest.join_key_types.get(k, "INT64") for k in manifest.join_keys}
    return {
        "parity.input_sets": "features,entity_keys",
        "parity.entity_keys": tensors(keys),
        "parity.request_data": tensors(dict(manifest.request_data)),
        "parity.feature_service": manifest.feature_service,
    }


_OUTPUTS = ("score", "label", "confidence", "decision")
_EXPLANATION_OUTPUTS = ("attribution_features", "base_value", "attributions")


def _explanation_tensors(outs: list[PredictionOut], names: list[str]) -> list[converters.Output]:
    """``attribution_features`` [F], ``base_value`` [N] and ``attributions`` [N, F] (row-major,
    features in ``attribution_features`` order; NaN for a row the fallback answered)."""
    base, matrix = [], []
    for o in outs:
        if o.explanation is None:
            base.append(float("nan"))
            matrix += [float("nan")] * len(names)
            continue
        by_name = {a.feature: a.contribution for a in o.explanation.attributions}
        base.append(o.explanation.base_value)
        matrix += [by_name[n] for n in names]
    return [
        ("attribution_features", "BYTES", names),
        ("base_value", "FP64", base),
        ("attributions", "FP64", matrix, [len(outs), len(names)]),
    ]


_SERVICES = {
    pb_grpc.PredictionServiceServicer: pb.DESCRIPTOR.services_by_name["PredictionService"],
    v2_grpc.GRPCInferenceServiceServicer: v2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
}
