"""``parity score`` on the spark profile: entities scored on Spark's executors.

The same contract as :mod:`framework.models.batch_score` — point-in-time features
at each row's event time, the version's own pipeline through
:func:`framework.models.estimator.feature_frame` and :func:`framework.models.estimator.score`,
the same output columns in input order — with the work on executors: the join is
:func:`framework.spark.training_set.join`; the model artifact is shipped to the
executors with ``SparkContext.addFile`` and loaded there through
:func:`framework.registry.artifact.load` (checksum and trusted types verified again,
once per Python worker); each partition is scored a batch of Arrow rows at a time
(``mapInArrow``); the executors write the output as a folder of Parquet parts,
``part-00000...`` in input order. Nothing is collected to the driver. Spark's
stage progress is reported (:mod:`framework.spark.progress`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from framework.features.entity_frame import ROW
from framework.features.fields import FeatureField
from framework.models.spec import Task
from framework.progress import Progress
from framework.spark import training_set as spark_training_set
from framework.spark.progress import watched
from framework.spark.session import session

#: Loaded models per Python worker, by artifact checksum (a worker scores many batches).
_MODELS: dict[str, Any] = {}


def score_on_spark(
    store: Any,
    version: tuple[Any, Any, Any],
    artifact: tuple[Path, str],
    entities: Path,
    out: Path,
    *,
    batch_rows: int,
    temp_directory: Path | None,
    progress: Progress,
) -> tuple[int, str]:
    """Score ``entities`` into the folder ``out``; the rows and the dataset fingerprint.

    ``version`` is (ref, fitted model, manifest) as the driver loaded it (its checksum
    verified); ``artifact`` the artifact file and its sha256, which the executors load.
    """
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    ref, _, manifest = version
    spark = session(store)
    with spark_training_set.staged(out, temp_directory) as (work, tmp):
        joined = spark_training_set.join(store, manifest.feature_service, entities, work)
        path, sha = artifact
        spark.sparkContext.addFile(str(path))
        entity_fields = [joined.frame.schema[c] for c in joined.entity_columns]
        schema = StructType(
            [
                *entity_fields,
                StructField("score", DoubleType(), True),
                StructField("label", StringType(), True),
                StructField("confidence", DoubleType(), True),
                StructField("model_name", StringType(), True),
                StructField("model_version", StringType(), True),
                StructField(ROW, joined.frame.schema[ROW].dataType, True),
            ]
        )
        task = _ScoreTask(
            artifact=(path.name, sha),
            fields=list(manifest.fields),
            task=manifest.task,
            threshold=manifest.serving.threshold,
            model=(ref.name, str(ref.version)),
            entity_columns=joined.entity_columns,
            batch_rows=batch_rows,
        )
        scored = joined.frame.mapInArrow(task, schema)
        with watched(spark, progress, f"parity score {ref} -> {out}"):
            scored.drop(ROW).write.parquet(str(tmp))
    return joined.rows, joined.info(False, None).fingerprint


class _ScoreTask:
    """What ``mapInArrow`` runs on executors: the version's pipeline over each batch."""

    def __init__(
        self,
        artifact: tuple[str, str],
        fields: list[FeatureField],
        task: Task,
        threshold: float,
        model: tuple[str, str],
        entity_columns: list[str],
        batch_rows: int,
    ) -> None:
        self.artifact, self.fields, self.task, self.threshold = artifact, fields, task, threshold
        self.model, self.entity_columns, self.batch_rows = model, entity_columns, batch_rows

    def _fitted(self) -> Any:
        from pyspark import SparkFiles

        from framework.registry import artifact

        name, sha = self.artifact
        if sha not in _MODELS:
            _MODELS[sha] = artifact.load(Path(SparkFiles.get(name)), sha)
        return _MODELS[sha]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from framework.models.estimator import feature_frame, score
        from framework.models.score_rows import output_columns

        fitted = self._fitted()
        for batch in batches:
            for start in range(0, batch.num_rows, self.batch_rows):
                table = pa.Table.from_batches([batch.slice(start, self.batch_rows)])
                scores = score(fitted, feature_frame(table, self.fields), self.task, self.threshold)
                part = output_columns(table, self.entity_columns, scores, self.task, self.model)
                part = part.append_column(ROW, table.column(ROW))
                yield from part.to_batches()
