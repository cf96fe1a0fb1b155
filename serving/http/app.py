"""The Open Inference Protocol over HTTP/REST: KServe V2's paths on the gRPC data plane.

=====  ==============================================  =================================
GET    ``/v2/health/live``                             ``{"live": true}``
GET    ``/v2/health/ready``                            ``{"ready": ...}`` (503 when not)
GET    ``/v2``                                         server metadata
GET    ``/v2/models/{name}[/versions/{v}]``            model metadata
GET    ``/v2/models/{name}[/versions/{v}]/ready``      ``{"name", "ready"}`` (503 when not)
POST   ``/v2/models/{name}[/versions/{v}]/infer``      inference
=====  ==============================================  =================================

Every call but the health checks runs through the gRPC binding's servicer and its
guard, so validation, routing, logging, metrics, tokens (``Authorization: Bearer``)
and rate limits are the same code; a request body that is not a valid request is
answered, logged and counted there as unparseable gRPC bytes are. A status becomes the
HTTP status Google's API design maps it to (``google/rpc/code.proto``), with the
protocol's JSON error body ``{"error": "..."}``; ``x-request-id`` names the logged
call. The servicer blocks (it may wait for a batch run), so it runs on a thread pool
whose threads limit their OpenMP threads as gRPC's do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving.dataplane.errors import InvalidInput
from serving.grpc.security import Guard, required_scope
from serving.grpc.servicers import HEADER_SAFE, InferenceServicer, Malformed
from serving.http import codec
from serving.stubs.inference import grpc_predict_v2_pb2 as v2

log = logging.getLogger("parity.serving.http")
_SERVICE = "/inference.GRPCInferenceService/"

#: gRPC status -> HTTP status, as google/rpc/code.proto documents the mapping.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class Aborted(Exception):
    """A call the servicer or the guard ended with a status (``context.abort``)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class HttpCall:
    """What the servicer and the guard use of a ``grpc.ServicerContext``, for one HTTP
    request: the peer, the ``authorization`` header, trailers (which become headers)."""

    def __init__(self, request: Request) -> None:
        client = request.client
        host, port = (client.host, client.port) if client else ("unknown", 0)
        self._peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self._auth = request.headers.getlist("authorization")
        self.trailers: tuple[tuple[str, str], ...] = ()

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", value) for value in self._auth]

    def time_remaining(self) -> float | None:
        return None  # HTTP has no deadline header in the protocol

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailers = tuple(metadata)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class _Unreadable(Malformed):
    """A REST body that is no valid inference request: the servicer answers and logs it
    as it does request bytes that do not parse."""

    def __init__(self, error: InvalidInput, name: str, version: str) -> None:
        super().__init__("inference request", 0, str(error))
        self._error, self.model_name, self.model_version = error, name, version

    def error(self) -> InvalidInput:
        return self._error


def _json(
    doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(body, status, headers, media_type="application/json")


class RestBinding:
    """The routes, answering through ``servicer`` (and ``guard``, if any) on ``executor``."""

    def __init__(
        self,
        servicer: InferenceServicer,
        guard: Guard | None,
        executor: Executor,
        max_body_bytes: int,
    ) -> None:
        self.servicer, self.guard, self.executor = servicer, guard, executor
        self.max_body_bytes = max_body_bytes

    def app(self) -> Starlette:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        routes = [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            *(Route(p, self.model_metadata, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/ready", self.model_ready, methods=["GET"]) for p in (model, versioned)),
            *(Route(p + "/infer", self.infer, methods=["POST"]) for p in (model, versioned)),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={404: self._no_route, 405: self._no_route, Exception: self._bug},
        )

    async def _bug(self, request: Request, exc: Exception) -> Response:
        """A failure of this module's own code: an error that says so, logged and counted."""
        log.error("http %s %s failed: %r", request.method, request.url.path, exc, exc_info=exc)
        model = request.path_params.get("name", "")
        if model not in self.servicer.predictor.registry.names():
            model = ""  # a label per model the registry has, never a client's made-up name
        self.servicer.metrics.internal_errors.labels(model, "http").inc()
        return _json({"error": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        reason = "no such path" if status == 404 else f"{request.method} is not allowed here"
        return _json({"error": f"{request.method} {request.url.path}: {reason} (the Open "
                      "Inference Protocol's paths are under /v2)"}, status)  # fmt: skip

    async def _call(
        self, rpc: str, call: HttpCall, make: Callable[[], Any], guarded: bool = True
    ) -> Any:
        """Run the servicer's ``rpc`` on the request ``make()`` builds, after the guard."""
        method = getattr(self.servicer, rpc)
        guard = self.guard if guarded else None

        def run() -> Any:
            if guard is not None:
                scope = required_scope(_SERVICE + rpc)
                assert scope is not None
                guard.check(_SERVICE + rpc, scope, call)
            return method(make(), call)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        try:
            answer = await self._call(
                "ServerReady", HttpCall(request), v2.ServerReadyRequest, guarded=False
            )
        except Aborted as exc:
            return _error(exc, ())
        return _json({"ready": answer.ready}, 200 if answer.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return await self._answer("ServerMetadata", request, v2.ServerMetadataRequest)

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model(request)
        return await self._answer(
            "ModelMetadata", request, lambda: v2.ModelMetadataRequest(name=name, version=version)
        )

    async def model_ready(self, request: Request) -> Response:
        name, version = _model(request)
        try:
            answer = await self._call(
                "ModelReady",
                HttpCall(request),
                lambda: v2.ModelReadyRequest(name=name, version=version),
            )
        except Aborted as exc:
            return _error(exc, ())
        return _json({"name": name, "ready": answer.ready}, 200 if answer.ready else 503)

    async def _answer(self, rpc: str, request: Request, make: Callable[[], Any]) -> Response:
        try:
            answer = await self._call(rpc, HttpCall(request), make)
        except Aborted as exc:
            return _error(exc, ())
        return Response(codec.message_json(answer), media_type="application/json")

    async def infer(self, request: Request) -> Response:
        name, version = _model(request)
        try:
            body = await self._body(request)
        except _BodyRefused as exc:
            return _json({"error": str(exc)}, exc.status)
        binary: set[str] | None = set()

        def make() -> Any:
            nonlocal binary
            try:
                infer, binary = codec.infer_request(
                    body, request.headers.get(codec.HEADER_LENGTH), name, version
                )
            except InvalidInput as exc:
                return _Unreadable(exc, name, version)
            return infer

        call = HttpCall(request)
        try:
            answer = await self._call("ModelInfer", call, make)
        except Aborted as exc:
            return _error(exc, call.trailers)
        content, json_length = codec.infer_response(answer, binary)
        # The id the call was logged under, when a header can carry it (the body has it).
        headers = {"x-request-id": answer.id} if HEADER_SAFE.fullmatch(answer.id) else {}
        if json_length is None:
            return Response(content, headers=headers, media_type="application/json")
        headers["inference-header-content-length"] = str(json_length)
        return Response(content, headers=headers, media_type="application/octet-stream")

    async def _body(self, request: Request) -> bytes:
        """The body, at most ``max_body_bytes`` (also once decompressed)."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _BodyRefused(413, f"request body: {declared} bytes, over the {limit} allowed.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _BodyRefused(413, f"request body: over the {limit} bytes allowed.")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "identity":
            return body
        if encoding not in ("gzip", "deflate"):
            raise _BodyRefused(
                415, f"Content-Encoding: {encoding!r} is not supported (gzip, deflate, identity)."
            )
        inflate = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            plain = inflate.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _BodyRefused(400, f"request body: not valid {encoding} data ({exc}).") from None
        if len(plain) > limit or inflate.unconsumed_tail:
            raise _BodyRefused(413, f"request body: over the {limit} bytes allowed, inflated.")
        return plain


class _BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _model(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params.get("version", "")


def _error(exc: Aborted, trailers: tuple[tuple[str, str], ...]) -> Response:
    status = HTTP_STATUS.get(exc.code, 500)
    return _json({"error": exc.details}, status, dict(trailers))
