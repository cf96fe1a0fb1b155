"""The rows ``parity score`` writes, whichever engine scored them: the entity columns,
then ``score``, ``label`` (as the server's prediction log writes it: ``"0"``/``"1"``,
empty for regression), ``confidence`` (0 where undefined), ``model_name`` and
``model_version``. Used by :mod:`framework.models.batch_score` and, on executors, by
:mod:`framework.models.spark_score`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from framework.models.spec import Task


def output_columns(
    table: pa.Table,
    entity_columns: list[str],
    scores: Any,
    task: Task,
    model: tuple[str, str],
) -> pa.Table:
    """The output rows of ``table``: its entity columns, then score, label, confidence,
    model name and version (``model``)."""
    n = table.num_rows
    if task is Task.CLASSIFICATION:
        label = pa.array(scores.label.astype(np.int64).astype(str), pa.string())
    else:
        label = pa.array([""] * n, pa.string())
    confidence = np.where(np.isnan(scores.confidence), 0.0, scores.confidence)
    columns = {c: table.column(c) for c in entity_columns}
    columns.update(
        score=pa.array(scores.score, pa.float64()),
        label=label,
        confidence=pa.array(confidence, pa.float64()),
        model_name=pa.array([model[0]] * n, pa.string()),
        model_version=pa.array([model[1]] * n, pa.string()),
    )
    return pa.table(columns)
