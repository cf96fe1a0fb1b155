"""The prediction log's own column names, and the names a model's inputs may not take.

Each logged row (written by ``serving.dataplane.predictor``, read by ``parity monitor``,
``skew``, ``feedback`` and ``retrain``) holds the prediction's own columns next to
the model's entity keys, request data and features, each feature with
``<feature>__timestamp`` and ``<feature>__status``; the log's partitions add ``model``
and ``date`` when it is read. An input named like one of those would overwrite it or
be overwritten (a feature named ``score`` was read back as the prediction's score, and
``skew`` then saw every row mismatch), so :func:`check_input_names` refuses such a
name when a model is trained, before any work.
"""

from __future__ import annotations

from collections.abc import Iterable

from framework.errors import ConfigError

#: The prediction's own columns, in the order the server writes them.
OWN_COLUMNS = (
    "__request_id", "__row_index", "__timestamp", "__log_timestamp", "__log_date",
    "model_name", "model_version", "role",
    "score", "label", "confidence", "decision", "reasons", "latency_seconds", "cpu_seconds",
)  # fmt: skip
#: The hive partition columns the log's reader adds.
PARTITIONS = ("model", "date")
#: Suffixes of the columns logged per feature.
FEATURE_SUFFIXES = ("__timestamp", "__status")


def check_input_names(names: Iterable[tuple[str, str]], service: str | None) -> None:
    """Refuse inputs (``(name, what)`` pairs: features, join keys, request data) whose name
    the prediction log keeps for its own columns, naming each."""
    taken = set(OWN_COLUMNS) | set(PARTITIONS)
    clashes = [
        f"{what} {name!r}"
        for name, what in names
        if name in taken or name.startswith("__") or name.endswith(FEATURE_SUFFIXES)
    ]
    if not clashes:
        return
    where = f"The feature service {service!r}" if service else "The features"
    raise ConfigError(
        f"{where} has inputs named like the prediction log's own columns: "
        f"{', '.join(clashes)} (the log keeps {', '.join(OWN_COLUMNS + PARTITIONS)}, names "
        "starting with '__' and ending in '__timestamp' or '__status'). Rename each in its "
        "feature view (a Field of another name, with field_mapping from the source column)."
    )
