"""The commented TOML of a new model spec, as ``parity init`` writes it.

:data:`TASK_DEFAULTS` holds what a new spec starts from per task (every other field:
the spec model's default, :mod:`framework.models.spec`); :func:`render_spec` writes
the spec with a comment on each table and no rules of any particular dataset.
"""

from __future__ import annotations

import json
from typing import Any

#: What a new spec starts from, per task (every other field: the spec model's default).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": {
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "split": (0.7, 0.1, 0.2),
        "calibration": "isotonic",
        "gate_metric": "pr_auc",
    },
    "regression": {
        "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
        "split": (0.8, 0.0, 0.2),  # a regression model is not calibrated
        "calibration": "none",
        "gate_metric": "rmse",
    },
}
TASKS = tuple(TASK_DEFAULTS)


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def _toml_query(query: str) -> str:
    if "'''" not in query and not query.endswith("'"):
        return "'''\n" + query.strip("\n") + "\n'''"
    return _toml_string(query)


def render_spec(
    *,
    name: str,
    task: str,
    feature_service: str,
    query: str,
    keys: list[str],
    label: str,
    event_timestamp: str,
    label_timestamp: str | None,
    request_data: list[str],
    placeholder: bool,
) -> str:
    """The commented TOML of a new spec (fields: docs/spec-reference.md)."""
    d = TASK_DEFAULTS[task]
    train, calibration, holdout = d["split"]
    lines = [
        "# A model spec for parity train, written by parity init. Every field and its",
        "# default: docs/spec-reference.md.",
        f"name = {_toml_string(name)}",
        'description = ""',
        f'task = "{task}"',
        "# The Feast feature service the model reads, in training and in serving alike.",
        f"feature_service = {_toml_string(feature_service)}",
        "random_state = 0",
        "",
        *_labels_lines(
            feature_service,
            query,
            keys,
            label,
            event_timestamp,
            label_timestamp,
            request_data,
            placeholder,
        ),
        "",
        "[window]",
        "# Every labelled event up to --as-of; set start, end or lookback_days to narrow it.",
        "",
        "[split]",
        "# Consecutive periods in time (fractions of the rows), never a random split.",
        f"train = {train}",
        f"calibration = {calibration}",
        f"holdout = {holdout}",
        "",
        "[estimator]",
        f'class = "{d["estimator"]}"',
        "params = {}",
        "",
        "[calibration]",
        f'method = "{d["calibration"]}"',
        "",
    ]
    if task == "classification":
        lines += [
            "[serving]",
            "# score >= threshold: label 1; confidence >= accept: ACCEPT; below review_below:",
            "# REVIEW. Add [[serving.rules]] checks of your own data here if you need them.",
            "threshold = 0.5",
            "accept = 0.85",
            "review_below = 0.6",
            "",
        ]
    lines += [
        "[gate]",
        "# A new version is promoted only if its holdout metric is not worse than the",
        "# champion's by more than tolerance.",
        f'metric = "{d["gate_metric"]}"',
        "tolerance = 0.01",
        "",
    ]
    return "\n".join(lines)


def _labels_lines(
    feature_service: str,
    query: str,
    keys: list[str],
    label: str,
    event_timestamp: str,
    label_timestamp: str | None,
    request_data: list[str],
    placeholder: bool,
) -> list[str]:
    """The spec's ``[labels]`` table."""
    request = (
        f"\n# Feature service {feature_service} also needs request data: {', '.join(request_data)}."
        if request_data
        else ""
    )
    edit = (
        "\n# A PLACEHOLDER: replace it with the query over your labels before parity train."
        if placeholder
        else ""
    )
    stamp = (
        f"label_timestamp = {_toml_string(label_timestamp)}"
        if label_timestamp
        else '# label_timestamp = "label_known_at"  # labels known later than the event'
    )
    keys_toml = "[" + ", ".join(_toml_string(k) for k in keys) + "]"
    return [
        "[labels]",
        "# DuckDB SQL with one row per labelled event: the entity keys, the label, when the",
        "# prediction would have been made and any request data. Relative file paths are",
        "# resolved against the repository folder (the one holding feature_store.yaml)."
        + request
        + edit,
        f"query = {_toml_query(query)}",
        f"keys = {keys_toml}",
        f"column = {_toml_string(label)}",
        f"event_timestamp = {_toml_string(event_timestamp)}",
        stamp,
        "# Added to the event time before the join: -1 joins the features known just before",
        "# the event, when a feature row at the event's own time already includes it.",
        "offset_microseconds = 0",
    ]
