"""The one table mapping every error the server can raise to a gRPC status.

::

    ParityError (framework.errors)
    ├── ConfigError ─── NotFoundError (framework.registry.model_registry)   NOT_FOUND
    │   └── (other)                                          INVALID_ARGUMENT
    ├── DataError ───── InvalidInput                         INVALID_ARGUMENT
    │   └── (other)                                          INVALID_ARGUMENT
    ├── ArtifactError (framework.registry.artifact)                   FAILED_PRECONDITION
    ├── DefinitionsChanged                                   FAILED_PRECONDITION
    ├── Unsupported                                          FAILED_PRECONDITION
    ├── NotExplainable (framework.models.explain)                   FAILED_PRECONDITION
    ├── StoreUnavailable                                     UNAVAILABLE
    ├── InternalError                                        INTERNAL
    ├── LogFull (serving.log.writer)                     RESOURCE_EXHAUSTED
    └── FeatureStoreError                                    UNAVAILABLE

Anything else is a bug in parity and is answered ``INTERNAL`` (and logged);
a client's mistake never is.
"""

from __future__ import annotations

import grpc

from framework.errors import ConfigError, DataError, FeatureStoreError
from framework.models.explain import NotExplainable
from framework.registry.artifact import ArtifactError
from framework.registry.model_registry import NotFoundError
from serving.dataplane.errors import (
    DefinitionsChanged,
    InternalError,
    InvalidInput,
    StoreUnavailable,
    Unsupported,
)
from serving.log.writer import LogFull


def _table() -> list[tuple[type[BaseException], grpc.StatusCode]]:
    # Most specific first: the first matching class wins.
    return [
        (NotFoundError, grpc.StatusCode.NOT_FOUND),
        (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
        (ArtifactError, grpc.StatusCode.FAILED_PRECONDITION),
        (DefinitionsChanged, grpc.StatusCode.FAILED_PRECONDITION),
        (Unsupported, grpc.StatusCode.FAILED_PRECONDITION),
        (NotExplainable, grpc.StatusCode.FAILED_PRECONDITION),
        (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
        (InternalError, grpc.StatusCode.INTERNAL),
        (LogFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (FeatureStoreError, grpc.StatusCode.UNAVAILABLE),
        (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
        (DataError, grpc.StatusCode.INVALID_ARGUMENT),
    ]


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _table():
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL
