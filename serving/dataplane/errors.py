"""The data plane's errors: what the predictor raises, independent of any transport.

:mod:`serving.grpc.status` maps each of them (and parity's other errors) to a gRPC status.
"""

from __future__ import annotations

from framework.errors import DataError, ParityError


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
