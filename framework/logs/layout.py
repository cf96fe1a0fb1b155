"""The prediction log's file layout and own column names, written down once.

Files under the log root (hive partitions, one schema per file)::

    model=<model>/date=<YYYY-MM-DD>/part-<ns>-<unique>.parquet
    model=<model>/date=<YYYY-MM-DD>/.part-<ns>-<unique>.parquet.tmp   a file being written

The writer (``serving.log.writer``) and the reader (:mod:`framework.logs.reader`)
both take folder names, file names and column names from here.

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

import re
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from framework.errors import ConfigError, DataError

REQUEST_ID = "__request_id"
ROW_INDEX = "__row_index"
#: When the request arrived (the server's clock): the time monitoring windows select on.
TIMESTAMP = "__timestamp"
LOG_TIMESTAMP = "__log_timestamp"
#: The day a row was logged: it picks the ``date=`` partition.
LOG_DATE = "__log_date"
MODEL_VERSION = "model_version"
#: The prediction's own columns, in the order the server writes them.
OWN_COLUMNS = (
    REQUEST_ID, ROW_INDEX, TIMESTAMP, LOG_TIMESTAMP, LOG_DATE,
    "model_name", MODEL_VERSION, "role",
    "score", "label", "confidence", "decision", "reasons", "latency_seconds", "cpu_seconds",
)  # fmt: skip
MODEL_PARTITION = "model"
DATE_PARTITION = "date"
#: The hive partition columns the log's reader adds.
PARTITIONS = (MODEL_PARTITION, DATE_PARTITION)
#: The partition columns' types, as DuckDB's ``read_parquet(hive_types = ...)`` takes them.
HIVE_TYPES_SQL = f"{{'{MODEL_PARTITION}': VARCHAR, '{DATE_PARTITION}': DATE}}"
#: A model name the log accepts (it names a folder).
MODEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
#: Suffixes of the columns logged per feature.
FEATURE_SUFFIXES = ("__timestamp", "__status")


def check_model_name(model: str) -> None:
    """Refuse a model name that cannot name a log folder."""
    if not MODEL_NAME.match(model):
        raise DataError(f"Invalid model name for the prediction log: {model!r}")


def model_dir(root: Path, model: str) -> Path:
    return Path(root) / f"{MODEL_PARTITION}={model}"


def date_dir(root: Path, model: str, day: date) -> Path:
    """The folder of ``model``'s rows logged on ``day``."""
    return model_dir(root, model) / f"{DATE_PARTITION}={day.isoformat()}"


def date_of(folder: Path) -> str:
    """The ``YYYY-MM-DD`` of a :func:`date_dir` folder."""
    return folder.name.removeprefix(f"{DATE_PARTITION}=")


def parts_pattern(model: str = "*") -> str:
    """The glob, relative to the log root, of every whole file of ``model`` (``*``: all)."""
    return f"{MODEL_PARTITION}={model}/{DATE_PARTITION}=*/part-*.parquet"


def part_name(written_ns: int, unique: str) -> str:
    """A whole file's name: its write time (ns since the epoch) first, so names sort by it."""
    return f"part-{written_ns:020d}-{unique}.parquet"


def temporary_name(name: str) -> str:
    """The hidden name a file has while it is written (no reader's glob matches it)."""
    return f".{name}.tmp"


def written_ns(part: Path) -> int:
    """The write time :func:`part_name` put in a file's name."""
    return int(part.name.split("-")[1])


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
