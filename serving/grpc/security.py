"""Security of ``parity serve``: TLS, bearer tokens with scopes, per-client rate limits.

* **TLS** (``tls_cert`` + ``tls_key``; with ``tls_client_ca`` clients must present a
  certificate signed by that CA: mutual TLS). Checked at start with the standard
  library's ``ssl``, so a missing file, a bad PEM or a key that does not match the
  certificate stops the server with a one-line :class:`ConfigError` naming the setting.
* **Tokens** (``auth_tokens``): a TOML file of ``[[token]]`` entries — client ``name``,
  the ``sha256`` of the token (never the token), ``scopes`` and an optional
  ``rate_limit``. Clients send ``authorization: Bearer <token>``. ``predict`` opens
  ``parity.v1`` Predict and the whole Open Inference Protocol service; ``admin`` opens
  ReportOutcome (ground truth that drives retraining) and reflection; GetModelInfo is
  open to either (a predicting client learns from it which entity keys and request data
  a model takes, and their types, as ModelMetadata tells V2 clients).
  Health checks stay open for load balancers. ``parity serve-token`` makes an entry.
* **Rate limits** (``rate_limit``, e.g. ``100/second``; a token's own ``rate_limit``
  overrides it) per client: the token's name, else the peer's IP address. Counted by
  the ``limits`` library in memory (each worker process alone) or, with
  ``rate_limit_storage = redis://…``, in Redis, shared by every worker process.

Refusals are ``UNAUTHENTICATED``, ``PERMISSION_DENIED`` (naming the scope needed) and
``RESOURCE_EXHAUSTED`` (naming the client and the limit), counted in
``parity_auth_failures_total{reason}`` and ``parity_rate_limited_total{client}`` (the
token's name; ``anonymous`` for every peer address when no tokens are in use).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import ssl
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from framework.errors import ConfigError

if TYPE_CHECKING:
    from serving.grpc.metrics import ServerMetrics
    from serving.grpc.settings import ServeSettings

log = logging.getLogger("parity.serving.security")

SCOPES = ("predict", "admin")
#: ``parity_rate_limited_total``'s client label for calls limited by peer address.
ANONYMOUS = "anonymous"
_OPEN = ("/grpc.health.v1.Health/",)
_PREDICT = ("/parity.v1.PredictionService/Predict", "/inference.GRPCInferenceService/")
#: Methods either scope opens.
_EITHER = ("/parity.v1.PredictionService/GetModelInfo",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {"name", "sha256", "scopes", "rate_limit"}


def required_scope(method: str) -> str | None:
    """The scope a gRPC method needs (``None``: open to all; ``a|b``: either). Anything not
    known to be a prediction call — outcomes, reflection, a future RPC — is admin."""
    if method.startswith(_OPEN):
        return None
    if method.startswith(_PREDICT):
        return "predict"
    if method in _EITHER:
        return "predict|admin"
    return "admin"


def _flag(setting: str) -> str:
    return f"{setting} (--{setting.replace('_', '-')}, PARITY_SERVE_{setting.upper()})"


# ------------------------------------------------------------------------- TLS


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{_flag(setting)}: cannot read {path}: {exc.strerror}") from exc


def _encrypted_key() -> bytes:
    raise ConfigError(f"{_flag('tls_key')}: the key is encrypted; gRPC needs an unencrypted PEM")


def server_credentials(settings: ServeSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, checked; ``None`` for plain TCP (the default)."""
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(f"{_flag('tls_client_ca')} needs tls_cert and tls_key set too")
        return None
    if cert is None or key is None:
        missing, given = ("tls_cert", "tls_key") if cert is None else ("tls_key", "tls_cert")
        raise ConfigError(f"{_flag(missing)} is not set, but {given} is: TLS needs both")
    cert_pem, key_pem = _read(cert, "tls_cert"), _read(key, "tls_key")
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(cert, key, password=_encrypted_key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{_flag('tls_cert')} / tls_key: {cert} and {key} are not a PEM certificate "
            f"and its private key ({exc.reason or exc})"
        ) from exc
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read(client_ca, "tls_client_ca")
        try:
            check.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"{_flag('tls_client_ca')}: {client_ca} holds no PEM CA certificate ({exc})"
            ) from exc
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )


# ---------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    """One client's entry in the tokens file."""

    name: str
    sha256: str
    scopes: frozenset[str]
    rate_limit: tuple[RateLimitItem, ...] | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_rate_limit(text: str, where: str) -> tuple[RateLimitItem, ...]:
    """``"100/second"``, or several (``"20/second;1000/hour"``): every one applies."""
    try:
        items = tuple(parse_many(text))
    except ValueError:
        items = ()
    if not items:
        raise ConfigError(
            f"{where}: {text!r} is not a rate limit (like '100/second' or '20/second;1000/hour')"
        )
    return items


def load_tokens(path: Path) -> list[Token]:
    """Read and check a tokens file; a bad entry is a ConfigError naming it and the field."""
    where = f"{_flag('auth_tokens')}: {path}"
    try:
        doc = tomllib.loads(_read(path, "auth_tokens").decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    if set(doc) - {"token"} or not isinstance(doc.get("token", []), list):
        raise ConfigError(f"{where}: expected only [[token]] entries, found {sorted(doc)}")
    tokens: list[Token] = []
    for i, entry in enumerate(doc.get("token", []), start=1):
        tokens.append(_entry(entry, f"{where}: token {i}", tokens))
    return tokens


def _entry(entry: dict[str, Any], where: str, earlier: list[Token]) -> Token:
    name = entry.get("name")
    if isinstance(name, str):
        where += f" ({name!r})"

    def bad(field: str, reason: str) -> ConfigError:
        return ConfigError(f"{where}: {field}: {reason}")

    if unknown := sorted(set(entry) - _FIELDS):
        raise bad(unknown[0], f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad("name", "required: letters, digits and _.@- (at most 64)")
    if any(t.name == name for t in earlier):
        raise bad("name", "another entry has this name")
    sha = entry.get("sha256")
    if not isinstance(sha, str) or not _HEX.match(sha):
        raise bad("sha256", "required: the token's SHA-256 as 64 lowercase hex digits")
    if any(t.sha256 == sha for t in earlier):
        raise bad("sha256", "another entry has this hash")
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise bad("scopes", f"required: a non-empty list of {', '.join(SCOPES)}")
    if unknown := sorted(set(scopes) - set(SCOPES)):
        raise bad("scopes", f"unknown scope {unknown[0]!r} (known: {', '.join(SCOPES)})")
    limit = entry.get("rate_limit")
    if limit is not None and not isinstance(limit, str):
        raise bad("rate_limit", "must be a string like '100/second'")
    items = parse_rate_limit(limit, f"{where}: rate_limit") if limit is not None else None
    return Token(name, sha, frozenset(scopes), items)


def new_token(name: str, scopes: list[str], rate_limit: str | None = None) -> tuple[str, str]:
    """A fresh random token and its ``[[token]]`` entry (which holds only its hash)."""
    token = "pty_" + secrets.token_urlsafe(32)
    fields: dict[str, Any] = {"name": name, "sha256": digest(token), "scopes": scopes}
    if rate_limit is not None:
        fields["rate_limit"] = rate_limit
    entry = _toml_entry(fields)
    _entry(tomllib.loads(entry)["token"][0], "the new token", [])  # the same checks as a load
    return token, entry


def _toml_entry(fields: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "[[token]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in fields.items())


# ------------------------------------------------------------------ interceptor


def peer_address(peer: str) -> str:
    """The IP of a gRPC peer string (``ipv4:127.0.0.1:5301``, ``ipv6:[::1]:5301``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]")
    return peer


class Guard(grpc.ServerInterceptor):  # type: ignore[misc]
    """Authenticates, authorises and rate-limits every call except health checks."""

    def __init__(
        self,
        tokens: list[Token] | None,
        rate_limit: tuple[RateLimitItem, ...] | None,
        storage_uri: str,
        metrics: ServerMetrics,
    ) -> None:
        self.tokens, self.default_limit, self.metrics = tokens, rate_limit, metrics
        self.limiter = None
        if rate_limit or any(t.rate_limit for t in tokens or []):
            storage = storage_from_string(storage_uri)
            self.limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def from_settings(cls, settings: ServeSettings, metrics: ServerMetrics) -> Guard | None:
        """The guard the settings ask for (checked: a ConfigError names the setting), or
        ``None`` when neither tokens nor rate limits are configured."""
        tokens = load_tokens(settings.auth_tokens) if settings.auth_tokens else None
        limit = (
            parse_rate_limit(settings.rate_limit, _flag("rate_limit"))
            if settings.rate_limit
            else None
        )
        if tokens is None and limit is None:
            return None
        guard = cls(tokens, limit, settings.rate_limit_storage, metrics)
        if guard.limiter is not None and not guard.limiter.storage.check():
            raise ConfigError(
                f"{_flag('rate_limit_storage')}: cannot reach {settings.rate_limit_storage}"
            )
        return guard

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        scope = required_scope(details.method)
        if handler is None or scope is None:
            return handler
        return _guarded(handler, lambda context: self.check(details.method, scope, context))

    def check(self, method: str, scope: str, context: grpc.ServicerContext) -> None:
        """Abort the call unless it carries a token with ``scope`` and is within its limit."""
        limit = self.default_limit
        # The metric's label: a token's name (a set the operator wrote), never a peer
        # address (one series per address a client can come from grows without bound).
        if self.tokens is None:
            client = peer_address(context.peer())
            label = ANONYMOUS
        else:
            token = self._authenticate(context)
            if not token.scopes & set(scope.split("|")):
                self._refuse(
                    context, "scope", grpc.StatusCode.PERMISSION_DENIED,
                    f"client {token.name!r} lacks scope {scope!r}, which {method} needs",
                )  # fmt: skip
            client, limit = token.name, token.rate_limit or limit
            label = client
        if limit and self.limiter is not None:
            for item in limit:
                if not self.limiter.hit(item, "parity", client):
                    self.metrics.rate_limited.labels(label).inc()
                    reset = self.limiter.get_window_stats(item, "parity", client).reset_time
                    log.debug("rate limited: %s on %s", client, method)
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"client {client!r} is over its rate limit of {item} "
                        f"(retry in {max(reset - time.time(), 0):.1f} s)",
                    )

    def _authenticate(self, context: grpc.ServicerContext) -> Token:
        values = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if not values:
            self._refuse(
                context, "missing", grpc.StatusCode.UNAUTHENTICATED,
                "missing token: send metadata 'authorization: Bearer <token>'",
            )  # fmt: skip
        scheme, _, presented = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            self._refuse(
                context, "malformed", grpc.StatusCode.UNAUTHENTICATED,
                "authorization metadata must be 'Bearer <token>'",
            )  # fmt: skip
        wanted = digest(presented.strip())
        found = None
        for token in self.tokens or []:  # every entry, matching or not: no early exit
            if hmac.compare_digest(token.sha256, wanted):
                found = token
        if found is None:
            self._refuse(context, "unknown", grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        assert found is not None
        return found

    def _refuse(
        self, context: grpc.ServicerContext, reason: str, code: grpc.StatusCode, message: str
    ) -> None:
        self.metrics.auth_failures.labels(reason).inc()
        log.info("refused (%s) from %s: %s", reason, peer_address(context.peer()), message)
        context.abort(code, message)


def _guarded(handler: Any, check: Callable[[grpc.ServicerContext], None]) -> Any:
    """``handler`` with ``check(context)`` run before its behaviour, whatever its kind."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            break

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        check(context)
        return behaviour(request, context)

    factory = getattr(grpc, f"{kind}_rpc_method_handler")
    return factory(
        guarded,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
