"""Security of ``parity serve``, over real sockets: TLS and mutual TLS (real handshakes
with certificates from a throw-away CA made by trustme), bearer tokens and scopes,
per-client rate limits (in memory, and shared through a real Redis), message-size and
row limits, the metrics that count refusals, and the command-line side."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from framework.cli.main import main
from framework.errors import ConfigError
from serving.grpc.client import PredictionClient
from serving.grpc.security import digest, load_tokens
from serving.grpc.server import RunningServer, start_server
from serving.grpc.settings import ServeSettings
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from serving.stubs.parity.v1 import prediction_pb2 as pb
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc
from tests.support.serve_process import parity_serve
from tests.support.workspaces import Served

pytestmark = pytest.mark.integration
MODEL = "fraud_model"
ROW = {"entity_keys": {"user_id": 1, "merchant_id": 1},
       "request_data": {"amount": 10.0, "hour_of_day": 3}}  # fmt: skip


@contextlib.contextmanager
def secured(served: Served, data: Path, **settings: Any) -> Iterator[RunningServer]:
    """A second server over the served workspace's store and registry, with ``settings``
    (its own data folder: prediction log, outcomes, review queue)."""
    config = ServeSettings(port=0, metrics_port=0, log_flush_seconds=0.2, max_rows=500, **settings)
    running = start_server(served.store, served.registry, data, config, clock=served.now.timestamp)
    try:
        yield running
    finally:
        running.stop(1)


def target(running: RunningServer) -> str:
    return f"127.0.0.1:{running.port}"


def metric(running: RunningServer, name: str, labels: str) -> float:
    """A sample's value from the server's /metrics endpoint (0 when absent)."""
    url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def code_of(call: Callable[[], Any]) -> tuple[str, str]:
    """The status name and details of a call (``OK`` when it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


# ------------------------------------------------------------------------- TLS


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a
    second, untrusted CA with a client certificate of its own — all as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("checkout.clients.test", common_name="checkout")
    stranger = other.issue_cert("stranger.clients.test", common_name="stranger")
    paths = {}
    for name, blob in [
        ("ca", ca.cert_pem), ("server_cert", server.cert_chain_pems[0]),
        ("server_key", server.private_key_pem), ("client_cert", client.cert_chain_pems[0]),
        ("client_key", client.private_key_pem), ("other_ca", other.cert_pem),
        ("other_client_cert", stranger.cert_chain_pems[0]),
        ("other_client_key", stranger.private_key_pem),
    ]:  # fmt: skip
        paths[name] = root / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return Pki(**paths)


def test_tls_answers_a_client_that_trusts_the_ca_and_refuses_others(
    served: Served, pki: Pki, tmp_path: Path
) -> None:
    with secured(served, tmp_path, tls_cert=pki.server_cert, tls_key=pki.server_key) as running:
        with PredictionClient(target(running), tls_ca=pki.ca) as client:
            assert client.predict(MODEL, [ROW])[0]["model_version"] == "1"
        with PredictionClient(target(running), timeout=5) as plain:
            code, _ = code_of(lambda: plain.predict(MODEL, [ROW]))
        assert code == "UNAVAILABLE"  # a plaintext client gets no answer from a TLS port
        with PredictionClient(target(running), timeout=5, tls_ca=pki.other_ca) as wrong:
            code, _ = code_of(lambda: wrong.predict(MODEL, [ROW]))
        assert code == "UNAVAILABLE"  # the server's certificate is not signed by other_ca


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    served: Served, pki: Pki, tmp_path: Path
) -> None:
    settings = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    with secured(served, tmp_path, **settings) as running:
        t = target(running)
        with PredictionClient(t, tls_ca=pki.ca, tls_cert=pki.client_cert,
                              tls_key=pki.client_key) as client:  # fmt: skip
            assert client.predict(MODEL, [ROW])[0]["model_version"] == "1"
        with PredictionClient(t, timeout=5, tls_ca=pki.ca) as anonymous:
            assert code_of(lambda: anonymous.predict(MODEL, [ROW]))[0] == "UNAVAILABLE"
        with PredictionClient(t, timeout=5, tls_ca=pki.ca, tls_cert=pki.other_client_cert,
                              tls_key=pki.other_client_key) as stranger:  # fmt: skip
            assert code_of(lambda: stranger.predict(MODEL, [ROW]))[0] == "UNAVAILABLE"
        # Health checks are open to any client that completes the handshake, none else.
        with grpc.secure_channel(t, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as ch:
            check = health_pb2_grpc.HealthStub(ch).Check
            assert code_of(lambda: check(health_pb2.HealthCheckRequest(), timeout=5))[0] == (
                "UNAVAILABLE"
            )


def _encrypted_key(pki: Pki, path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "nope.pem", "tls_key": "server_key"},
         "tls_cert (--tls-cert, PARITY_SERVE_TLS_CERT): cannot read nope.pem: No such file"),
        ({"tls_cert": "server_cert", "tls_key": "nope.pem"},
         "tls_key (--tls-key, PARITY_SERVE_TLS_KEY): cannot read nope.pem"),
        ({"tls_cert": "server_cert", "tls_key": "client_key"}, "KEY_VALUES_MISMATCH"),
        ({"tls_cert": "server_key", "tls_key": "server_key"}, "not a PEM certificate"),
        ({"tls_cert": "server_cert", "tls_key": "encrypted"}, "the key is encrypted"),
        ({"tls_cert": "server_cert"}, "tls_key (--tls-key, PARITY_SERVE_TLS_KEY) is not set"),
        ({"tls_client_ca": "ca"}, "tls_client_ca (--tls-client-ca, PARITY_SERVE_TLS_CLIENT_CA) "
         "needs tls_cert and tls_key"),
        ({"tls_cert": "server_cert", "tls_key": "server_key", "tls_client_ca": "garbage"},
         "tls_client_ca (--tls-client-ca, PARITY_SERVE_TLS_CLIENT_CA): "),
    ],
)  # fmt: skip
def test_bad_tls_settings_stop_the_server_naming_the_setting(
    served: Served, pki: Pki, tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    files = {
        "encrypted": _encrypted_key(pki, tmp_path / "encrypted.pem"),
        "garbage": tmp_path / "garbage.pem",
        "nope.pem": Path("nope.pem"),
    }
    files["garbage"].write_text("not a certificate\n")
    given = {k: files.get(v) or getattr(pki, v) for k, v in settings.items()}
    with pytest.raises(ConfigError) as err:
        with secured(served, tmp_path, **given):
            pass
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_parity_serve_reports_a_bad_tls_setting_on_one_line(pki: Pki) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framework.cli", "serve", "--port", "0",
         "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("parity serve: error: tls_cert (--tls-cert")
    assert "KEY_VALUES_MISMATCH" in lines[0]


# ---------------------------------------------------------------------- tokens


def make_token(path: Path, name: str, scopes: str, *extra: str) -> str:
    """``parity serve-token --append PATH``: the token it printed."""
    out = io.StringIO()
    argv = ["serve-token", "--name", name, "--scopes", scopes, "--append", str(path), *extra]
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == f"token for {name} (shown once; parity keeps only its hash):"
    return lines[1].strip()


def test_serve_token_prints_a_token_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.toml"
    token = make_token(path, "checkout", "predict,admin", "--rate-limit", "5/second")
    other = make_token(path, "batch", "predict")
    text = path.read_text()
    assert token not in text and other not in text
    assert f'sha256 = "{digest(token)}"' in text
    (checkout, batch) = load_tokens(path)
    assert (checkout.name, checkout.scopes, checkout.sha256) == (
        "checkout", frozenset({"predict", "admin"}), digest(token)
    )  # fmt: skip
    assert [str(i) for i in checkout.rate_limit or ()] == ["5 per 1 second"]
    assert (batch.name, batch.scopes, batch.rate_limit) == ("batch", frozenset({"predict"}), None)
    assert token != other and len(token) > 40
    capsys.readouterr()
    assert main(["serve-token", "--name", "batch", "--append", str(path)]) == 2
    assert "already has a token named 'batch'" in capsys.readouterr().err
    assert main(["serve-token", "--name", "x", "--scopes", "predict,write"]) == 2
    assert "unknown scope 'write' (known: predict, admin)" in capsys.readouterr().err


@dataclass
class Guarded:
    running: RunningServer
    tokens: dict[str, str]  # role -> token


@pytest.fixture(scope="module")
def guarded(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """A server with a tokens file: a predict client, an admin client, one with both."""
    root = tmp_path_factory.mktemp("guarded")
    path = root / "tokens.toml"
    tokens = {
        "predict": make_token(path, "checkout", "predict"),
        "admin": make_token(path, "ops", "admin"),
        "both": make_token(path, "owner", "predict,admin"),
        "unknown": "pty_not-a-token-anyone-was-given",
    }
    with secured(served, root / "data", auth_tokens=path) as running:
        yield Guarded(running, tokens)


def _reflect(ch: grpc.Channel, md: Any) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    return list(stub.ServerReflectionInfo(iter([request]), metadata=md, timeout=10))


def _predict_row() -> pb.Row:
    row = pb.Row()
    row.entity_keys["user_id"].int64_value = 1
    row.entity_keys["merchant_id"].int64_value = 1
    row.request_data["amount"].double_value = 10.0
    row.request_data["hour_of_day"].int64_value = 3
    return row


CALLS: dict[str, Callable[[grpc.Channel, Any], Any]] = {
    "Predict": lambda ch, md: pb_grpc.PredictionServiceStub(ch).Predict(
        pb.PredictRequest(model_name=MODEL, rows=[_predict_row()]), metadata=md, timeout=30
    ),
    "GetModelInfo": lambda ch, md: pb_grpc.PredictionServiceStub(ch).GetModelInfo(
        pb.GetModelInfoRequest(model_name=MODEL), metadata=md, timeout=10
    ),
    "ReportOutcome": lambda ch, md: pb_grpc.PredictionServiceStub(ch).ReportOutcome(
        pb.ReportOutcomeRequest(request_id="r-1", label=1.0), metadata=md, timeout=10
    ),
    "ServerLive": lambda ch, md: v2_grpc.GRPCInferenceServiceStub(ch).ServerLive(
        v2.ServerLiveRequest(), metadata=md, timeout=10
    ),
    "ModelReady": lambda ch, md: v2_grpc.GRPCInferenceServiceStub(ch).ModelReady(
        v2.ModelReadyRequest(name=MODEL), metadata=md, timeout=10
    ),
    "Reflection": _reflect,
    "Health": lambda ch, md: health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(), metadata=md, timeout=10
    ),
}
UNAUTH = "UNAUTHENTICATED"
DENIED = "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("role", "rpc", "code", "names"),
    [
        (None, "Predict", UNAUTH, "missing token: send metadata 'authorization: Bearer <token>'"),
        (None, "ServerLive", UNAUTH, "missing token"),
        (None, "GetModelInfo", UNAUTH, "missing token"),
        (None, "Reflection", UNAUTH, "missing token"),
        (None, "Health", "OK", ""),
        ("unknown", "Predict", UNAUTH, "unknown token"),
        ("unknown", "Health", "OK", ""),
        ("malformed", "Predict", UNAUTH, "authorization metadata must be 'Bearer <token>'"),
        ("predict", "Predict", "OK", ""),
        ("predict", "ServerLive", "OK", ""),
        ("predict", "ModelReady", "OK", ""),
        ("predict", "GetModelInfo", "OK", ""),
        ("predict", "ReportOutcome", DENIED, "lacks scope 'admin'"),
        ("predict", "Reflection", DENIED, "lacks scope 'admin'"),
        ("admin", "Predict", DENIED, "client 'ops' lacks scope 'predict'"),
        ("admin", "ServerLive", DENIED, "lacks scope 'predict'"),
        ("admin", "GetModelInfo", "OK", ""),
        ("admin", "ReportOutcome", "OK", ""),
        ("admin", "Reflection", "OK", ""),
        ("both", "Predict", "OK", ""),
        ("both", "GetModelInfo", "OK", ""),
    ],
)  # fmt: skip
def test_tokens_and_scopes_guard_every_service_but_health(
    guarded: Guarded, role: str | None, rpc: str, code: str, names: str
) -> None:
    if role is None:
        md: tuple[tuple[str, str], ...] = ()
    elif role == "malformed":
        md = (("authorization", f"Basic {guarded.tokens['predict']}"),)
    else:
        md = (("authorization", f"Bearer {guarded.tokens[role]}"),)
    with grpc.insecure_channel(target(guarded.running)) as ch:
        got, details = code_of(lambda: CALLS[rpc](ch, md))
    assert got == code, details
    assert names in details


def test_auth_failures_are_counted_and_the_server_stays_up(guarded: Guarded) -> None:
    reasons = ("missing", "malformed", "unknown", "scope")
    before = {r: metric(guarded.running, "parity_auth_failures_total", f'reason="{r}"')
              for r in reasons}  # fmt: skip
    bad = {
        "missing": (),
        "malformed": (("authorization", "Bearer"),),
        "unknown": (("authorization", "Bearer pty_nobody"),),
    }
    with grpc.insecure_channel(target(guarded.running)) as ch:
        for _ in range(10):
            for md in bad.values():
                assert code_of(lambda md=md: CALLS["Predict"](ch, md))[0] == UNAUTH
            ops = (("authorization", f"Bearer {guarded.tokens['admin']}"),)
            assert code_of(lambda md=ops: CALLS["Predict"](ch, md))[0] == DENIED
    after = {r: metric(guarded.running, "parity_auth_failures_total", f'reason="{r}"')
             for r in reasons}  # fmt: skip
    assert {r: after[r] - before[r] for r in reasons} == dict.fromkeys(reasons, 10.0)
    with PredictionClient(target(guarded.running), token=guarded.tokens["predict"]) as client:
        assert client.predict(MODEL, [ROW])[0]["model_version"] == "1"
    with PredictionClient(target(guarded.running), token=guarded.tokens["admin"]) as client:
        assert client.model_info(MODEL)["version"] == "1"
        assert client.report_outcome("r-2", label=0.0)["accepted"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('name = "a"\nscopes = ["predict"]', "token 1 ('a'): sha256: required"),
        ('name = "a"\nsha256 = "ABC"\nscopes = ["predict"]', "token 1 ('a'): sha256: required"),
        ('sha256 = "{h}"\nscopes = ["predict"]', "token 1: name: required"),
        ('name = "a b"\nsha256 = "{h}"\nscopes = ["predict"]', "token 1 ('a b'): name:"),
        ('name = "a"\nsha256 = "{h}"', "token 1 ('a'): scopes: required"),
        ('name = "a"\nsha256 = "{h}"\nscopes = ["write"]',
         "token 1 ('a'): scopes: unknown scope 'write' (known: predict, admin)"),
        ('name = "a"\nsha256 = "{h}"\nscopes = ["predict"]\nrate_limit = "lots"',
         "token 1 ('a'): rate_limit: 'lots' is not a rate limit"),
        ('name = "a"\nsha256 = "{h}"\nscopes = ["predict"]\ntoken = "pty_x"',
         "token 1 ('a'): token: unknown field"),
        ('name = "ok"\nsha256 = "{h}"\nscopes = ["predict"]\n[[token]]\nname = "ok"\n'
         'sha256 = "{h2}"\nscopes = ["predict"]', "token 2 ('ok'): name: another entry has"),
        ('name = "a"\nsha256 = "{h}"\nscopes = ["predict"]\n[[token]]\nname = "b"\n'
         'sha256 = "{h}"\nscopes = ["predict"]', "token 2 ('b'): sha256: another entry has"),
        ('name = "a"\nsha256 = ', "not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_tokens_file_stops_the_server_naming_entry_and_field(
    served: Served, tmp_path: Path, entry: str, message: str
) -> None:
    path = tmp_path / "tokens.toml"
    text = entry.replace("{h}", digest("one")).replace("{h2}", digest("two"))
    path.write_text("[[token]]\n" + text + "\n")
    with pytest.raises(ConfigError) as err:
        with secured(served, tmp_path / "data", auth_tokens=path):
            pass
    assert str(err.value).startswith(
        f"auth_tokens (--auth-tokens, PARITY_SERVE_AUTH_TOKENS): {path}: "
    )
    assert message in str(err.value)


# ----------------------------------------------------------------- rate limits


def _live(running: RunningServer, token: str | None = None) -> tuple[str, str]:
    md = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target(running)) as ch:
        return code_of(lambda: CALLS["ServerLive"](ch, md))


def test_rate_limit_per_peer_address_without_tokens(served: Served, tmp_path: Path) -> None:
    with secured(served, tmp_path, rate_limit="3/minute") as running:
        assert [_live(running)[0] for _ in range(3)] == ["OK"] * 3
        code, details = _live(running)
        assert code == "RESOURCE_EXHAUSTED"
        assert details.startswith("client '127.0.0.1' is over its rate limit of 3 per 1 minute")
        with grpc.insecure_channel(target(running)) as ch:  # health checks are never limited
            assert code_of(lambda: CALLS["Health"](ch, ()))[0] == "OK"
        assert metric(running, "parity_rate_limited_total", 'client="anonymous"') == 1.0


def test_rate_limited_series_stay_bounded_under_many_client_addresses(
    served: Served, tmp_path: Path
) -> None:
    """Twelve clients from twelve source addresses, each over its limit: each refusal
    names its own address, and the counter has one series for all of them."""
    from tests.support.source_proxy import from_address

    addresses = [f"127.0.0.{n}" for n in range(2, 14)]
    with secured(served, tmp_path, rate_limit="1/minute") as running:
        host, port = target(running).rsplit(":", 1)
        for address in addresses:
            with from_address(address, (host, int(port))) as via:
                with grpc.insecure_channel(via) as ch:
                    answers = [code_of(lambda ch=ch: CALLS["ServerLive"](ch, ())) for _ in range(2)]
            assert answers[0][0] == "OK" and answers[1][0] == "RESOURCE_EXHAUSTED"
            assert answers[1][1].startswith(f"client {address!r} is over its rate limit")
        url = f"http://127.0.0.1:{running.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        series = re.findall(r"^parity_rate_limited_total\{(.*)\} (\S+)$", text, re.M)
        assert series == [('client="anonymous"', f"{float(len(addresses))}")]


def test_rate_limits_are_per_token_with_its_own_override(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    small = make_token(path, "small", "predict")
    big = make_token(path, "big", "predict", "--rate-limit", "5/minute")
    with secured(served, tmp_path / "data", auth_tokens=path, rate_limit="2/minute") as running:
        assert [_live(running, small)[0] for _ in range(2)] == ["OK"] * 2
        code, details = _live(running, small)
        assert code == "RESOURCE_EXHAUSTED"
        assert details.startswith("client 'small' is over its rate limit of 2 per 1 minute")
        # Another client's budget is its own: five calls, the sixth refused.
        assert [_live(running, big)[0] for _ in range(6)] == ["OK"] * 5 + ["RESOURCE_EXHAUSTED"]
        assert "client 'big' is over its rate limit of 5 per 1 minute" in _live(running, big)[1]
        assert metric(running, "parity_rate_limited_total", 'client="big"') == 2.0
        assert metric(running, "parity_rate_limited_total", 'client="small"') == 1.0


def test_worker_processes_can_share_a_limit_through_redis(
    served: Served, tmp_path: Path, redis_address: str
) -> None:
    host_port, _, options = redis_address.partition(",")
    db = options.removeprefix("db=") or "0"
    shared = {"rate_limit": "2/minute", "rate_limit_storage": f"redis://{host_port}/{db}"}
    with (
        secured(served, tmp_path / "a", **shared) as a,
        secured(served, tmp_path / "b", **shared) as b,
    ):
        assert [_live(a)[0], _live(b)[0]] == ["OK", "OK"]
        assert _live(a)[0] == _live(b)[0] == "RESOURCE_EXHAUSTED"


def test_an_unreachable_rate_limit_storage_stops_the_server(served: Served, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError) as err:
        with secured(served, tmp_path, rate_limit="1/second",
                     rate_limit_storage=f"redis://127.0.0.1:{port}/0"):  # fmt: skip
            pass
    assert str(err.value).startswith(
        "rate_limit_storage (--rate-limit-storage, PARITY_SERVE_RATE_LIMIT_STORAGE): "
        f"cannot reach redis://127.0.0.1:{port}/0"
    )


def test_a_bad_rate_limit_names_the_setting(served: Served, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        with secured(served, tmp_path, rate_limit="fast"):
            pass
    assert str(err.value).startswith(
        "rate_limit (--rate-limit, PARITY_SERVE_RATE_LIMIT): 'fast' is not a rate limit"
    )


# ------------------------------------------------------------ size and row limits


def test_an_oversized_message_is_resource_exhausted(served: Served, tmp_path: Path) -> None:
    with secured(served, tmp_path, max_message_bytes=4096) as running:
        with PredictionClient(target(running)) as client:
            code, details = code_of(lambda: client.predict(MODEL, [ROW] * 200))
            assert code == "RESOURCE_EXHAUSTED"
            assert "larger than max" in details, details
            assert client.predict(MODEL, [ROW])[0]["model_version"] == "1"  # still serving


def test_too_many_rows_are_invalid_argument_in_both_apis(served: Served) -> None:
    """``served`` allows 500 rows a request (``max_rows``)."""
    with PredictionClient(served.target) as client:
        code, details = code_of(lambda: client.predict(MODEL, [ROW] * 501))
    assert (code, details) == ("INVALID_ARGUMENT", "rows: 501 rows exceed the limit of 500.")
    request = v2.ModelInferRequest(model_name=MODEL)
    for name in ("user_id", "merchant_id", "hour_of_day"):
        request.inputs.add(name=name, datatype="INT64", shape=[501]).contents.int64_contents.extend(
            [1] * 501
        )
    amount = request.inputs.add(name="amount", datatype="FP64", shape=[501])
    amount.contents.fp64_contents.extend([10.0] * 501)
    with grpc.insecure_channel(served.target) as ch:
        stub = v2_grpc.GRPCInferenceServiceStub(ch)
        code, details = code_of(lambda: stub.ModelInfer(request, timeout=30))
    assert code == "INVALID_ARGUMENT"
    assert "501 rows exceed the limit of 500" in details, details


# ------------------------------------------------------- the command-line side


@pytest.mark.slow
def test_workers_serve_tls_and_tokens_to_parity_predict(
    served: Served, pki: Pki, tmp_path: Path
) -> None:
    """``parity serve --workers 2`` passes TLS, tokens and the rate limit to every worker
    process; ``parity predict`` connects with ``--tls-ca`` and ``PARITY_TOKEN``."""
    import signal

    root = tmp_path / "ws"
    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    tokens = tmp_path / "tokens.toml"
    token = make_token(tokens, "checkout", "predict")
    args = ("--repo", str(root / "feature_repo"), "--workers", "2", "--now", served.now.isoformat(),
            "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
            "--auth-tokens", str(tokens), "--rate-limit", "1000/minute",
            "--log-level", "WARNING")  # fmt: skip
    with parity_serve(*args, logs=tmp_path, tls_ca=pki.ca) as server:
        t = server.target
        assert "with 2 worker processes" in server.line
        seen: set[str] = set()
        for _ in range(4):  # new connections each time: the kernel spreads them over both
            with PredictionClient(t, timeout=5, tls_ca=pki.ca) as anonymous:
                seen.add(code_of(lambda: anonymous.predict(MODEL, [ROW]))[0])
            with PredictionClient(t, timeout=5) as plain:
                seen.add("plain " + code_of(lambda: plain.predict(MODEL, [ROW]))[0])
            with PredictionClient(t, timeout=5, tls_ca=pki.ca, token=token) as client:
                seen.add(code_of(lambda: client.predict(MODEL, [ROW]))[0])
        assert seen == {UNAUTH, "plain UNAVAILABLE", "OK"}
        args = [sys.executable, "-m", "framework.cli", "predict", "--target", t,
                "--tls-ca", str(pki.ca), "--model", MODEL, "--entity", "user_id=1",
                "--entity", "merchant_id=1",
                "--request", "amount=12.5", "--request", "hour_of_day=3", "--json"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "PARITY_TOKEN"}
        ok = subprocess.run(args, capture_output=True, text=True, timeout=60,
                            env={**env, "PARITY_TOKEN": token})  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert '"model_version": "1"' in ok.stdout
        refused = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
        assert refused.returncode == 2
        assert refused.stderr.strip() == (
            "parity predict: error: UNAUTHENTICATED: missing token: send metadata "
            "'authorization: Bearer <token>'"
        )
        assert server.stop(signal.SIGTERM) == 0
