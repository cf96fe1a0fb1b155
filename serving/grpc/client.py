"""A Python client for ``parity.v1.PredictionService``.

>>> with PredictionClient("127.0.0.1:50051") as client:  # doctest: +SKIP
...     client.predict("fraud_model", [{"entity_keys": {"user_id": 1, "merchant_id": 2},
...                                     "request_data": {"amount": 12.5, "hour_of_day": 3}}])

Against a secured server (:mod:`serving.grpc.security`): ``tls_ca`` (the CA that signed the
server's certificate; any TLS option turns TLS on, system roots when no CA is given),
``tls_cert`` + ``tls_key`` (a client certificate, for mutual TLS) and ``token`` (sent
as ``authorization: Bearer <token>`` on every call).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from framework.errors import ConfigError
from serving.grpc.converters import from_value, to_value
from serving.stubs.parity.v1 import prediction_pb2 as pb
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc


class PredictionClient:
    def __init__(
        self,
        target: str,
        *,
        timeout: float = 10.0,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        token: str | None = None,
    ) -> None:
        self.channel = channel(target, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        self.stub = pb_grpc.PredictionServiceStub(self.channel)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def predict(
        self,
        model: str,
        rows: list[dict[str, dict[str, Any]]],
        *,
        version: str | None = None,
        alias: str | None = None,
        return_features: bool = False,
        request_id: str = "",
        explain: bool = False,
        explain_top_k: int = 0,
    ) -> list[dict[str, Any]]:
        """Score rows (``{"entity_keys": {...}, "request_data": {...}}``); one dict each.

        With ``explain``, each dict has ``base_value`` and ``attributions`` (feature,
        contribution, value; the largest first, ``explain_top_k`` of them if > 0)."""
        request = pb.PredictRequest(
            model_name=model,
            request_id=request_id,
            return_features=return_features,
            explain=explain,
            explain_top_k=explain_top_k,
        )
        if version:
            request.model_version = version
        elif alias:
            request.model_alias = alias
        for row in rows:
            r = request.rows.add()
            for k, v in row.get("entity_keys", {}).items():
                r.entity_keys[k].CopyFrom(to_value(v))
            for k, v in row.get("request_data", {}).items():
                r.request_data[k].CopyFrom(to_value(v))
        response = self.stub.Predict(request, timeout=self.timeout, metadata=self.metadata)
        out = []
        for p in response.predictions:
            item = MessageToDict(
                p, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            item["score"], item["confidence"] = p.score, p.confidence
            item["features"] = {k: from_value(v) for k, v in p.features.items()}
            item["base_value"] = p.base_value
            item["attributions"] = [
                {"feature": a.feature, "contribution": a.contribution, "value": from_value(a.value)}
                for a in p.attributions
            ]
            out.append(item)
        return out

    def model_info(
        self, model: str, *, version: str | None = None, alias: str | None = None
    ) -> dict[str, Any]:
        request = pb.GetModelInfoRequest(model_name=model)
        if version:
            request.model_version = version
        elif alias:
            request.model_alias = alias
        info = self.stub.GetModelInfo(request, timeout=self.timeout, metadata=self.metadata)
        return MessageToDict(info, preserving_proto_field_name=True)

    def report_outcome(
        self,
        request_id: str,
        *,
        label: float | None = None,
        outcome: Any = None,
        entity_keys: dict[str, Any] | None = None,
        event_time: datetime | None = None,
    ) -> dict[str, Any]:
        request = pb.ReportOutcomeRequest(request_id=request_id)
        if label is not None:
            request.label = label
        elif outcome is not None:
            request.outcome.CopyFrom(to_value(outcome))
        for k, v in (entity_keys or {}).items():
            request.entity_keys[k].CopyFrom(to_value(v))
        if event_time is not None:
            request.event_time.FromDatetime(event_time)
        response = self.stub.ReportOutcome(request, timeout=self.timeout, metadata=self.metadata)
        return {"accepted": response.accepted, "status": response.status}


def channel(
    target: str,
    *,
    tls_ca: str | Path | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> grpc.Channel:
    """A channel to ``target``: plain TCP, or TLS when any TLS option is given."""
    if tls_ca is None and tls_cert is None and tls_key is None:
        return grpc.insecure_channel(target)
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("tls_cert and tls_key go together (a client certificate and its key)")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls_ca, "tls_ca"),
        private_key=_read(tls_key, "tls_key"),
        certificate_chain=_read(tls_cert, "tls_cert"),
    )
    return grpc.secure_channel(target, credentials)


def _read(path: str | Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from exc
