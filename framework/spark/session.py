"""The Spark session of the ``spark`` profile, and whether a store runs on Spark.

The session is built from the profile's ``offline_store.spark_conf`` (Feast's
``SparkOfflineStoreConfig``: ``spark.master`` and the rest), with the settings
parity's semantics rely on laid over it whatever the file says:

- ``spark.sql.session.timeZone = UTC``: timestamps are UTC end to end, as in DuckDB;
- ``spark.sql.caseSensitive = true``: ``Amount`` and ``amount`` are two columns, as
  in Feast, Arrow and DuckDB;
- ``spark.sql.parquet.outputTimestampType = TIMESTAMP_MICROS``: written timestamps
  read back as ``timestamp[us, UTC]`` (not the legacy INT96);
- Arrow for the Python functions that run on executors (on-demand views, scoring).

Executors run Python: in local mode the driver's own interpreter
(``PYSPARK_PYTHON`` defaults to it); on a cluster, an image with parity installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from framework.errors import ConfigError
from framework.features.repository import SPARK_INSTALL_HINT, require_spark

#: What parity sets on every session (see the module docstring).
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.caseSensitive": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Nanosecond Parquet timestamps as longs, not an error (framework.spark.sources).
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
#: parity's defaults, which a profile's ``spark_conf`` may override: progress goes to
#: :mod:`framework.spark.progress`, not Spark's console bar.
DEFAULT_CONF = {"spark.master": "local[*]", "spark.ui.showConsoleProgress": "false"}


#: Spark's log settings for the driver JVM: warnings and errors of Spark's own, not its
#: INFO lines or the start-up banner (parity reports progress itself).
LOG4J = Path(__file__).with_name("log4j2.properties")


def quiet_start() -> None:
    """Start the driver JVM with :data:`LOG4J` (unless the caller set its own
    options) and, in local mode, on the loopback address (else Spark warns that the
    host name resolves to it and picks another interface)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    args = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    if "log4j" not in args:
        options = f"--driver-java-options -Dlog4j.configurationFile=file:{LOG4J}"
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"{options} {args or 'pyspark-shell'}".strip()


def uses_spark(store: Any) -> bool:
    """Whether ``store``'s offline store is Feast's Spark offline store."""
    return getattr(store.config.offline_store, "type", None) == "spark"


def session(store: Any) -> Any:
    """The active Spark session, else one built from ``store``'s ``spark_conf``."""
    require_spark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    quiet_start()
    conf = dict(getattr(store.config.offline_store, "spark_conf", None) or {})
    active = SparkSession.getActiveSession()
    if active is None:
        builder = SparkSession.builder.appName("parity")
        for key, value in {**DEFAULT_CONF, **conf}.items():
            builder = builder.config(key, value)
        for key, value in REQUIRED_CONF.items():
            builder = builder.config(key, value)
        try:
            active = builder.getOrCreate()
        except Exception as exc:  # py4j and Java start-up errors alike
            raise ConfigError(
                f"Could not start Spark ({' '.join(str(exc).split())[:300]}); {SPARK_INSTALL_HINT}."
            ) from exc
        active.sparkContext.setLogLevel("ERROR")
    for key, value in REQUIRED_CONF.items():  # an existing session: the SQL ones apply
        active.conf.set(key, value)
    return active
