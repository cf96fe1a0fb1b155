"""parity's error tree.

Every error parity raises on purpose derives from :class:`ParityError`; the
command line prints its message on one line and exits non-zero, and (later)
the gRPC edge maps each class to one status code in one table.

::

    ParityError
    ├── ConfigError          a setting, flag or file is wrong (exit 2)
    ├── DataError            input data is missing or malformed (exit 3)
    └── FeatureStoreError    Feast could not load, apply or materialise (exit 4)
"""

from __future__ import annotations


class ParityError(Exception):
    """Base class of every error parity raises on purpose."""

    exit_code = 1


class ConfigError(ParityError):
    """A setting, command-line flag or configuration file is wrong."""

    exit_code = 2


class DataError(ParityError):
    """Input data is missing, malformed or inconsistent."""

    exit_code = 3


class FeatureStoreError(ParityError):
    """The Feast repository could not be loaded, applied or materialised."""

    exit_code = 4
