"""The spark tests' shared Spark: one local[2] session for the whole run.

A session costs seconds to start (a JVM); every test here shares this one, as
``framework.spark.session.session`` picks the active session up. Without PySpark
or Java the tests skip with the reason, except under ``CI=true`` where that is a
failure (``.ci/run`` installs both: the dev lock holds the spark extra,
scripts/install-java the runtime).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.services import missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="session")
def spark_installed() -> None:
    """PySpark and Java are there (tests that run ``parity`` with ``--profile spark`` as a
    child process need no session of their own)."""
    if importlib.util.find_spec("pyspark") is None:
        missing("PySpark is not installed (pip install 'parity[spark]')")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        missing("no Java runtime for PySpark (scripts/install-java)")


@pytest.fixture(scope="session")
def spark(spark_installed: None) -> Iterator[Any]:
    """A local[2] Spark session with parity's settings, stopped at the end of the run."""
    from pyspark.sql import SparkSession

    from framework.spark.session import DEFAULT_CONF, REQUIRED_CONF

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("parity-tests")
    conf = {
        **DEFAULT_CONF,
        "spark.master": "local[2]",
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.enabled": "false",
        "spark.driver.memory": "1g",
        **REQUIRED_CONF,
    }
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
