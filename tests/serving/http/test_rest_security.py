"""The REST binding behind the same security as gRPC: TLS (and mutual TLS) from the same
settings, bearer tokens with scopes, rate limits; health checks open for probes."""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from serving.grpc.security import new_token
from serving.grpc.server import RunningServer, start_server
from serving.grpc.settings import ServeSettings
from tests.support.workspaces import Served

pytestmark = pytest.mark.integration
MODEL = "fraud_model"
INFER = json.dumps({"inputs": [
    {"name": "user_id", "datatype": "INT64", "shape": [1], "data": [1]},
    {"name": "merchant_id", "datatype": "INT64", "shape": [1], "data": [1]},
    {"name": "amount", "datatype": "FP64", "shape": [1], "data": [10.0]},
    {"name": "hour_of_day", "datatype": "INT64", "shape": [1], "data": [3]},
]}).encode()  # fmt: skip


@contextlib.contextmanager
def rest_server(served: Served, data: Path, **settings: Any) -> Iterator[RunningServer]:
    config = ServeSettings(port=0, http_port=0, log_flush_seconds=0.2, **settings)
    running = start_server(served.store, served.registry, data, config, clock=served.now.timestamp)
    try:
        yield running
    finally:
        running.stop(1)


def request(
    running: RunningServer,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    port = running.http_port
    assert port is not None
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_tokens_scopes_and_rate_limits_apply_to_rest_calls(served: Served, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    predict, entry = new_token("checkout", ["predict"], rate_limit="3/minute")
    admin, admin_entry = new_token("ops", ["admin"])
    tokens.write_text(entry + admin_entry)
    with rest_server(served, tmp_path / "data", auth_tokens=tokens) as running:
        infer = f"/v2/models/{MODEL}/infer"
        status, body = request(running, "POST", infer, INFER)
        assert status == 401 and "missing token" in body["error"]
        status, body = request(running, "POST", infer, INFER, token="pty_nobody")
        assert status == 401 and "unknown token" in body["error"]
        status, body = request(running, "POST", infer, INFER, token=admin)
        assert status == 403 and "lacks scope 'predict'" in body["error"]
        status, body = request(running, "GET", f"/v2/models/{MODEL}", token=admin)
        assert status == 403
        # Probes need no token, as grpc.health.v1 does not.
        assert request(running, "GET", "/v2/health/live")[0] == 200
        assert request(running, "GET", "/v2/health/ready")[0] == 200
        answers = [request(running, "POST", infer, INFER, token=predict) for _ in range(4)]
        assert [s for s, _ in answers[:3]] == [200, 200, 200]
        assert answers[0][1]["outputs"][0]["name"] == "score"
        status, body = answers[3]
        assert status == 429 and "over its rate limit" in body["error"]
        assert "checkout" in body["error"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rest-pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.test", common_name="client")
    paths = {}
    for name, blob in [("ca", ca.cert_pem), ("cert", server.cert_chain_pems[0]),
                       ("key", server.private_key_pem), ("client_cert", client.cert_chain_pems[0]),
                       ("client_key", client.private_key_pem)]:  # fmt: skip
        paths[name] = root / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return paths


def test_rest_speaks_tls_and_mutual_tls_from_the_grpc_settings(
    served: Served, tmp_path: Path, pki: dict[str, Path]
) -> None:
    trusting = ssl.create_default_context(cafile=str(pki["ca"]))
    tls = {"tls_cert": pki["cert"], "tls_key": pki["key"]}
    with rest_server(served, tmp_path / "tls", **tls) as running:
        status, body = request(running, "POST", f"/v2/models/{MODEL}/infer", INFER,
                               context=trusting)  # fmt: skip
        assert status == 200 and len(body["outputs"][0]["data"]) == 1
        with pytest.raises(ssl.SSLCertVerificationError):
            request(running, "GET", "/v2/health/live", context=ssl.create_default_context())
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            request(running, "GET", "/v2/health/live")  # plain HTTP on the TLS port
    with rest_server(served, tmp_path / "mtls", tls_client_ca=pki["ca"], **tls) as running:
        with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected)):
            request(running, "GET", "/v2/health/live", context=trusting)  # no client cert
        trusting.load_cert_chain(pki["client_cert"], pki["client_key"])
        assert request(running, "GET", "/v2/health/live", context=trusting)[0] == 200
