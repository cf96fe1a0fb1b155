"""Serving errors and the one table mapping every error to a gRPC status.

::

    ParityError (framework.errors)
    ├── ConfigError ─── NotFoundError (framework.registry)   NOT_FOUND
    │   └── (other)                                          INVALID_ARGUMENT
    ├── DataError ───── InvalidInput                         INVALID_ARGUMENT
    │   └── (other)                                          INVALID_ARGUMENT
    ├── ArtifactError (framework.artifact)                   FAILED_PRECONDITION
    ├── DefinitionsChanged                                   FAILED_PRECONDITION
    ├── Unsupported                                          FAILED_PRECONDITION
    ├── NotExplainable (framework.explain)                   FAILED_PRECONDITION
    ├── StoreUnavailable                                     UNAVAILABLE
    ├── InternalError                                        INTERNAL
    ├── LogFull (serving.prediction_log)                     RESOURCE_EXHAUSTED
    └── FeatureStoreError                                    UNAVAILABLE

Anything else is a bug in parity and is answered ``INTERNAL`` (and logged);
a client's mistake never is.
"""

from __future__ import annotations

import grpc

from framework.artifact import ArtifactError
from framework.errors import ConfigError, DataError, FeatureStoreError, ParityError
from framework.registry import NotFoundError


class InvalidInput(DataError):
    """A request field is missing, unknown or of the wrong type; the message names it."""


class DefinitionsChanged(ParityError):
    """The model's pinned feature definitions no longer match the Feast registry."""


class Unsupported(ParityError):
    """The request asks for something this model or server cannot do."""


class StoreUnavailable(ParityError):
    """The online store could not be read."""


class InternalError(ParityError):
    """parity could not do its own part with what the store returned (a value it cannot
    take, an on-demand view that failed): never a fallback, always ``INTERNAL``, with a
    message that names the model, the feature and the cause (the predictor logs each
    cause once and counts every occurrence)."""


def _table() -> list[tuple[type[BaseException], grpc.StatusCode]]:
    from framework.explain import NotExplainable
    from serving.prediction_log import LogFull

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
