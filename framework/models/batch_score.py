"""``parity score``: a table of entities scored offline, the way the server scores them.

Each entity row (join keys, an event time, the request data) gets the features
the point-in-time join gives at its event time (:func:`write_training_set`:
latest value at or before the time, within the view's TTL, on-demand features
by Feast's code) — what the server reads online at that moment — and is scored
by the registered version's own pipeline through the same
:func:`framework.models.estimator.feature_frame` and :func:`framework.models.estimator.score`
the server uses. The version is refused, as the server refuses it, when its
artifact fails its checksum or its pinned definitions no longer match the Feast
registry.

On the spark profile the work runs on Spark's executors and the output is a folder
of Parquet parts in input order (:mod:`framework.models.spark_score`).

The output Parquet holds the entity columns in input order, then ``score``,
``label`` (as the server's prediction log writes it: ``"0"``/``"1"``, empty for
regression), ``confidence``, ``model_name`` and ``model_version``. Memory stays
bounded whatever the size of the input: features stream to a temporary Parquet
file next to the output, and are scored a batch at a time. The output appears by
one rename when complete.

The server's routing decision (ACCEPT/VALIDATE/REVIEW with input checks and
rules) lives in ``serving.dataplane.routing`` and is not applied here.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from framework.errors import ConfigError
from framework.features.pinned import check_pinned
from framework.features.training_file import read_info
from framework.features.training_set import write_training_set
from framework.models.estimator import feature_frame, score
from framework.models.manifest import Manifest
from framework.models.score_rows import output_columns
from framework.progress import Progress
from framework.registry.artifact import ArtifactError
from framework.registry.model_registry import ModelRef, ModelRegistry
from framework.spark.session import uses_spark

BATCH_ROWS = 65_536
#: The task :func:`score_entities` reports its scored rows under.
TASK = "score"


@dataclass
class ScoreSummary:
    model: str
    feature_service: str
    rows: int
    out: str
    dataset_fingerprint: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_entities(
    store: Any,
    registry: ModelRegistry,
    model: str,
    entities: Path,
    out: Path,
    *,
    batch_rows: int = BATCH_ROWS,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> ScoreSummary:
    """Score every row of the Parquet file ``entities`` with ``model`` into ``out``.

    Parameters
    ----------
    store
        The Feast ``FeatureStore`` the model's feature service is registered in.
    registry
        The model registry.
    model
        ``NAME`` (its champion, else its latest version), ``NAME:VERSION`` or
        ``NAME@ALIAS``.
    entities
        Join keys, ``event_timestamp`` (or one timestamp column; naive is UTC) and
        the request data of the model's on-demand features.
    out
        The Parquet file to write.
    progress
        Hears of the point-in-time join (:func:`write_training_set`'s tasks), then of
        the rows scored, ``batch_rows`` at a time (task ``score``).

    Examples
    --------
    >>> score_entities(store, ModelRegistry(Path("data/models")), "fraud_model@champion",
    ...                Path("entities.parquet"), Path("scores.parquet"))  # doctest: +SKIP
    """
    started = time.perf_counter()
    progress = progress or Progress()
    if batch_rows < 1:
        raise ConfigError(f"The batch size must be at least 1. Got {batch_rows}.")
    if entities.suffix.lower() not in (".parquet", ".pq") and not entities.is_dir():
        raise ConfigError(f"The '--entities' file must be Parquet. Got {entities}.")
    ref = registry.resolve(model)
    fitted, manifest = Manifest.load(registry, ref)  # the checksum is verified before loading
    check = check_pinned(
        store, manifest.feature_service, manifest.fields, manifest.definitions_digest
    )
    if not check.ok:
        raise ArtifactError(f"{ref} cannot score against this Feast registry: {check.detail}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    if uses_spark(store):
        from framework.models.spark_score import score_on_spark

        artifact = (registry.version_dir(ref) / manifest.artifact.file, manifest.artifact.sha256)
        rows, dataset = score_on_spark(
            store,
            (ref, fitted, manifest),
            artifact,
            entities,
            out,
            batch_rows=batch_rows,
            temp_directory=temp_directory,
            progress=progress,
        )
        return ScoreSummary(
            model=str(ref),
            feature_service=manifest.feature_service,
            rows=rows,
            out=str(out),
            dataset_fingerprint=dataset,
            seconds=round(time.perf_counter() - started, 3),
        )
    entity_columns = pq.read_schema(entities).names

    features = out.with_name(f".{out.name}.features.tmp")
    try:
        write_training_set(
            store,
            manifest.feature_service,
            entities,
            features,
            memory_limit=memory_limit,
            temp_directory=temp_directory,
            threads=threads,
            progress=progress,
        )
        info = read_info(features)
        rows = _score_file(
            features, out, (ref, fitted, manifest), entity_columns, batch_rows, progress
        )
    finally:
        features.unlink(missing_ok=True)
    return ScoreSummary(
        model=str(ref),
        feature_service=manifest.feature_service,
        rows=rows,
        out=str(out),
        dataset_fingerprint=info.fingerprint,
        seconds=round(time.perf_counter() - started, 3),
    )


def _score_file(
    features: Path,
    out: Path,
    version: tuple[ModelRef, Any, Manifest],
    entity_columns: list[str],
    batch_rows: int,
    progress: Progress,
) -> int:
    """Score the joined ``features`` batch by batch into ``out``, written whole or not at
    all (a temporary file renamed at the end); the rows written."""
    ref, fitted, manifest = version
    tmp = out.with_name(f".{out.name}.tmp")
    fields, task, threshold = manifest.fields, manifest.task, manifest.serving.threshold
    rows = 0
    joined = pq.ParquetFile(features)
    progress.start(TASK, joined.metadata.num_rows, "rows", "scoring")
    try:
        writer: pq.ParquetWriter | None = None
        try:
            for batch in joined.iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                scores = score(fitted, feature_frame(table, fields), task, threshold)
                part = output_columns(
                    table, entity_columns, scores, task, (ref.name, str(ref.version))
                )
                if writer is None:
                    writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
                writer.write_table(part)
                rows += part.num_rows
                progress.advance(TASK, part.num_rows)
        finally:
            if writer is not None:
                writer.close()
        tmp.replace(out)
        progress.finish(TASK)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows
