"""The transport-free predictor: from entity keys and request data to decisions.

The predict path, per request: resolve the model version (an exact version,
an alias, or ``champion``) -> validate every row against what the version
expects (its entity join keys and request-data fields, with types) -> read the
online feature vectors of its pinned feature service with TTL enforced and
on-demand features computed by Feast's code (:mod:`framework.features.online`) -> score
with the version's own pipeline -> confidence and decision (ACCEPT / VALIDATE /
REVIEW by the version's serving thresholds) -> log every row to the
prediction log. Nothing here knows gRPC: servicers convert protobuf to these
types and back.

Which version a request means, and loading each version once, is
:mod:`serving.dataplane.versions`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from framework.features.online import COMPUTED, PRESENT, OnlineVectors, is_outage
from framework.models.estimator import feature_frame, score
from framework.models.explain import Explainer, Explanation, NotExplainable
from framework.models.spec import Task
from framework.registry.model_registry import ModelRef, ModelRegistry
from serving.dataplane.errors import InternalError, InvalidInput, StoreUnavailable
from serving.dataplane.routing import ACCEPT, FALLBACK, REVIEW, VALIDATE
from serving.dataplane.versions import LoadedModel, ModelVersions, over_budget

__all__ = ["ACCEPT", "FALLBACK", "REVIEW", "VALIDATE", "Predictor"]
log = logging.getLogger("parity.serving")

# Python types a request value may have, per Feast value type name.
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "INT64": (int,),
    "INT32": (int,),
    "DOUBLE": (float, int),
    "FLOAT": (float, int),
    "STRING": (str,),
    "BOOL": (bool,),
    "BYTES": (bytes,),
    "UUID": (str,),
    "TIME_UUID": (str,),
}


@dataclass
class RowInput:
    entity_keys: dict[str, Any]
    request_data: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictInput:
    model_name: str
    rows: list[RowInput]
    version: str | None = None
    alias: str | None = None
    request_id: str = ""
    return_features: bool = False
    explain: bool = False


@dataclass
class PredictionOut:
    request_id: str
    row_index: int
    model_name: str
    model_version: str
    score: float
    label: str
    confidence: float
    decision: str
    reasons: list[str]
    features: dict[str, Any] | None = None
    explanation: Explanation | None = None


class Predictor:
    """Scores requests with registered model versions and online features.

    Parameters
    ----------
    registry, store
        The model registry and the Feast store (the same one training used).
    max_rows
        The most rows one request may carry.
    log
        Called with (model name, Arrow table of logged rows) for every scored
        batch; ``serving.log.writer.PredictionLog.append`` in the server.
    clock
        Seconds since the epoch; TTLs are enforced against it.
    compile_models
        Score each version with its compiled form (:mod:`framework.models.compiled`,
        the same numbers without scikit-learn's per-call overhead) once it is verified,
        at start-up before the server reports ready, off the request path for versions
        loaded later.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        store: Any,
        *,
        max_rows: int = 1_000,
        log: Callable[[str, pa.Table], None] | None = None,
        clock: Callable[[], float] = time.time,
        observe: Callable[[str, float], None] | None = None,
        feature_status: Callable[[dict[str, list[str]]], None] | None = None,
        cpu: Callable[[str, str, float], None] | None = None,
        review: Callable[[list[dict[str, Any]]], None] | None = None,
        on_fallback: Callable[[str], None] | None = None,
        on_issue: Callable[[str, str], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
        feature_timeout: float = 1.0,
        lookup_threads: int = 8,
        canary_share: float = 0.0,
        canary_alias: str = "challenger",
        shadow_alias: str | None = None,
        micro_batching: bool = True,
        compile_models: bool = True,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.max_rows = max_rows
        self.log = log
        self.clock = clock
        self.observe = observe or (lambda stage, seconds: None)
        self.feature_status = feature_status or (lambda status: None)
        self.review = review
        self.on_fallback = on_fallback or (lambda cause: None)
        self.on_issue = on_issue or (lambda kind, feature: None)
        # (model, stage) of each request parity failed through its own fault.
        self.on_error = on_error or (lambda model, stage: None)
        self._logged_causes: set[str] = set()
        self.feature_timeout = feature_timeout
        self._lookups = ThreadPoolExecutor(
            lookup_threads, thread_name_prefix="lookup", initializer=thread_init
        )
        self._shadows = ThreadPoolExecutor(1, thread_name_prefix="shadow", initializer=thread_init)
        self.canary_share = canary_share
        self.canary_alias = canary_alias
        self.shadow_alias = shadow_alias
        # (model, version, CPU seconds of one scored request): the cost metric.
        self.cpu = cpu or (lambda model, version, seconds: None)
        self.versions = ModelVersions(
            registry, store, clock=clock, max_rows=max_rows, feature_timeout=feature_timeout,
            lookups=self._lookups, micro_batching=micro_batching,
            compile_models=compile_models, thread_init=thread_init,
        )  # fmt: skip

    # ------------------------------------------------------------ versions

    def ready(self) -> bool:
        """True once :meth:`warm_up` has loaded the models the server starts with."""
        return self.versions.ready()

    def warm_up(self, addresses: Sequence[str]) -> tuple[list[ModelRef], dict[str, str]]:
        """See :meth:`serving.dataplane.versions.ModelVersions.warm_up`."""
        return self.versions.warm_up(addresses)

    def resolve(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef:
        """The exact version a request means (default: the champion)."""
        return self.versions.resolve(name, version, alias)

    def load(self, ref: ModelRef) -> LoadedModel:
        """The version, loaded once (see :class:`serving.dataplane.versions.ModelVersions`)."""
        return self.versions.load(ref)

    def aliases_of(self, ref: ModelRef) -> list[str]:
        return self.versions.aliases_of(ref)

    def logged_fields(self) -> set[str]:
        """Entity keys, request fields and features of the loaded models."""
        return self.versions.logged_fields()

    def explainer(self, loaded: LoadedModel) -> Explainer:
        """The version's explainer, built once (raises :class:`NotExplainable`)."""
        return self.versions.explainer(loaded)

    def _explain(
        self, loaded: LoadedModel, frame: Any, rows: list[int], scores: Any, *, required: bool
    ) -> dict[int, Explanation]:
        """Explanations of ``rows`` (their served scores); none, if not ``required`` and
        the version cannot be explained."""
        if not rows:
            return {}
        try:
            explainer = self.explainer(loaded)
        except NotExplainable:
            if required:
                raise
            return {}
        t = time.perf_counter()
        out = explainer.explain(frame.iloc[rows], np.asarray(scores)[rows])
        self.observe("explain", time.perf_counter() - t)
        return dict(zip(rows, out, strict=True))

    # ------------------------------------------------------------ predict

    def validate(self, loaded: LoadedModel, rows: Sequence[RowInput]) -> None:
        """Every row carries exactly the keys and request data the version needs."""
        if not rows:
            raise InvalidInput("rows: at least one row is required.")
        if len(rows) > self.max_rows:
            raise InvalidInput(f"rows: {len(rows)} rows exceed the limit of {self.max_rows}.")
        keys, req = loaded.key_types, loaded.request_types
        for i, row in enumerate(rows):
            _check_fields(f"rows[{i}].entity_keys", row.entity_keys, keys, "entity key")
            _check_fields(f"rows[{i}].request_data", row.request_data, req, "request field")

    def predict(self, request: PredictInput, *, role: str = "primary") -> list[PredictionOut]:
        """Score a request. ``role`` is "primary" for client calls, "shadow" for the copy
        a shadow version scores off the hot path (logged, never returned)."""
        received = self.clock()
        started = time.perf_counter()
        cpu_started = time.thread_time()  # this thread's CPU only: others' requests excluded
        ref = self.resolve(request.model_name, request.version, request.alias)
        if role == "primary" and not request.version and not request.alias and request.rows:
            ref = self._canary(ref, request.rows[0])
        loaded = self.load(ref)
        self.validate(loaded, request.rows)
        if request.explain:
            self.explainer(loaded)  # a version that cannot be explained fails before any work
        request_id = request.request_id or uuid.uuid4().hex

        t = time.perf_counter()
        names = [f.name for f in loaded.fields]
        n = len(request.rows)
        lookup_cpu = 0.0
        try:
            vectors, lookup_cpu = self._read(loaded, request)
        except InvalidInput:
            raise
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable) and not is_outage(exc):
                raise self._defect(ref, "feature_lookup", exc) from exc
            cause = f"online store unavailable: {' '.join(str(exc).split())[:200]}"
            vectors = _empty_vectors(loaded, request, "UNAVAILABLE")
            fallback_rows = {i: cause for i in range(n)}
        else:
            fallback_rows = {}
            for i in range(n):
                missing = sum(vectors.status.get(f, ["PRESENT"] * n)[i] in _NO_VALUE for f in names)
                if missing > loaded.router.serving["max_missing_share"] * len(names):
                    fallback_rows[i] = f"{missing} of {len(names)} features without a value"
        self.observe("feature_lookup", time.perf_counter() - t)
        self.feature_status(vectors.status)

        t = time.perf_counter()
        serving = loaded.serving
        scores = None
        frame = feature_frame(vectors.table, loaded.fields)
        if len(fallback_rows) < n:
            try:
                scores = score(loaded.batched, frame, loaded.task, serving["threshold"])
            except Exception as exc:
                # The model failing on features the store returned is parity's failure
                # (a fallback would hide it behind an answer that looks valid).
                raise self._defect(ref, "inference", exc) from exc
        fallback = self._fallback(loaded, request, fallback_rows) if fallback_rows else {}
        self.observe("inference", time.perf_counter() - t)

        scored = [i for i in range(n) if i not in fallback]
        explained: dict[int, Explanation] = {}
        if request.explain and scores is not None:
            explained = self._explain(loaded, frame, scored, scores.score, required=True)
        outs = []
        review: list[dict[str, Any]] = []
        for i in range(n):
            values = {c: vectors.table.column(c)[i].as_py() for c in vectors.table.column_names}
            if i in fallback:
                value, conf, reasons = fallback[i]
                decision = FALLBACK
                label = _label(loaded.task, value, serving["threshold"])
                self.on_fallback(fallback_rows[i].split(":")[0])
            else:
                assert scores is not None
                value, conf = float(scores.score[i]), float(scores.confidence[i])
                label = _label(loaded.task, value, serving["threshold"])
                if loaded.task is Task.CLASSIFICATION:
                    status = {f: vectors.status.get(f, ["PRESENT"] * n)[i] for f in names}
                    decision, reasons, issues = loaded.router.decide(conf, values, status)
                    for issue in issues:
                        self.on_issue(issue.kind, issue.feature)
                else:
                    decision, reasons = ACCEPT, ["regression: no confidence routing"]
                reasons += _feature_reasons(vectors, names, i)
            if request.explain and i in fallback:
                reasons = [*reasons, "no explanation: the fallback answered"]
            out = PredictionOut(
                request_id=request_id,
                row_index=i,
                model_name=ref.name,
                model_version=str(ref.version),
                score=value,
                label=label,
                confidence=conf if not np.isnan(conf) else 0.0,
                decision=decision,
                reasons=reasons,
                features={f: values.get(f) for f in names} if request.return_features else None,
                explanation=explained.get(i),
            )
            outs.append(out)
            if decision == REVIEW:
                review.append(
                    {
                        "request_id": request_id, "row_index": i, "model": ref.name,
                        "version": str(ref.version), "score": value, "confidence": conf,
                        "reasons": reasons, "entity_keys": request.rows[i].entity_keys,
                        "features": {f: values.get(f) for f in names},
                    }
                )  # fmt: skip
        if review and self.review is not None and role == "primary":
            # A reviewer sees why the model hesitated: the attributions of each item.
            unexplained = [int(r["row_index"]) for r in review if r["row_index"] not in explained]
            if unexplained and scores is not None:
                explained |= self._explain(loaded, frame, unexplained, scores.score, required=False)
            for r in review:
                if (e := explained.get(int(r["row_index"]))) is not None:
                    r["explanation"] = explanation_dict(e)
            self.review(review)
        total = time.perf_counter() - started
        self.observe("total", total)
        cpu = time.thread_time() - cpu_started + lookup_cpu
        self.cpu(ref.name, str(ref.version), cpu)
        if self.log is not None:
            table = _log_table(loaded, request, vectors, outs, received, total, cpu, role)
            self.log(ref.name, table)
        if role == "primary" and self.shadow_alias:
            self._shadow(ref, request, request_id)
        return outs

    def _defect(self, ref: ModelRef, stage: str, exc: BaseException) -> InternalError:
        """The error for a request parity failed through its own fault: logged once per
        cause (with its traceback), counted every time."""
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        self.on_error(ref.name, stage)
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            log.error("%s: %s failed (counted, answered INTERNAL): %s", ref, stage, cause,
                      exc_info=exc)  # fmt: skip
        what = "read the features the store returned" if stage == "feature_lookup" else "score"
        return InternalError(f"{ref}: parity could not {what}: {cause}")

    def _canary(self, champion: ModelRef, row: RowInput) -> ModelRef:
        """The challenger for a stable ``canary_share`` of entities, else the champion."""
        if self.canary_share <= 0:
            return champion
        challenger = self.versions.alias_map(champion.name).get(self.canary_alias)
        if challenger is None or challenger == champion.version:
            return champion
        key = "|".join(f"{k}={row.entity_keys[k]}" for k in sorted(row.entity_keys))
        digest = hashlib.blake2b(f"{champion.name}|{key}".encode(), digest_size=8).digest()
        if int.from_bytes(digest, "big") / 2**64 < self.canary_share:
            try:
                return self.versions.servable(champion.name, self.canary_alias, challenger)
            except Exception:
                return champion  # a challenger that cannot load: the champion answers
        return champion

    def _shadow(self, served: ModelRef, request: PredictInput, request_id: str) -> None:
        """Score a copy of the request with the shadow alias's version, in the background."""
        version = self.versions.alias_map(served.name).get(self.shadow_alias or "")
        if version is None or version == served.version:
            return
        copy = PredictInput(
            model_name=served.name, rows=request.rows, version=str(version), request_id=request_id
        )

        def run() -> None:
            try:
                self.predict(copy, role="shadow")
            except Exception:
                log.exception("shadow scoring with %s:%s failed", served.name, version)

        self._shadows.submit(run)

    def close(self) -> None:
        """Wait for shadow scoring in flight (the server calls this before the log closes)."""
        self._shadows.shutdown(wait=True)
        self._lookups.shutdown(wait=False, cancel_futures=True)
        self.versions.close()

    def _read(self, loaded: LoadedModel, request: PredictInput) -> tuple[OnlineVectors, float]:
        """The request's online vectors and the lookup CPU seconds spent on them."""
        rows = ([r.entity_keys for r in request.rows], [r.request_data for r in request.rows])
        try:
            return loaded.lookup(rows, timeout=self.feature_timeout)
        except FutureTimeout:  # waited a whole budget for other requests' reads
            raise over_budget(self.feature_timeout) from None

    def _fallback(
        self, loaded: LoadedModel, request: PredictInput, rows: dict[int, str]
    ) -> dict[int, tuple[float, float, list[str]]]:
        """Scores of the version's fallback for ``rows`` (row -> cause)."""
        index = sorted(rows)
        threshold = loaded.serving["threshold"]
        try:
            if loaded.fallback is not None:
                table = pa.table(
                    {
                        f.name: pa.array(
                            [
                                v if v is None or f.categorical else float(v)  # INT64 > 2**53
                                for v in (request.rows[i].request_data.get(f.name) for i in index)
                            ],
                            pa.string() if f.categorical else pa.float64(),
                        )
                        for f in loaded.fallback_fields
                    }
                )
                out = score(
                    loaded.fallback, feature_frame(table, loaded.fallback_fields), loaded.task,
                    threshold,
                )  # fmt: skip
                what = f"fallback model on {', '.join(f.name for f in loaded.fallback_fields)}"
                values = [
                    (float(v), float(c)) for v, c in zip(out.score, out.confidence, strict=True)
                ]
            elif loaded.fallback_prior is not None:
                p = loaded.fallback_prior
                values = [(p, max(p, 1 - p))] * len(index)
                what = "fallback: the training base rate"
            else:
                raise StoreUnavailable("this version has no fallback")
        except Exception as exc:
            causes = "; ".join(sorted(set(rows.values())))
            raise StoreUnavailable(
                f"Cannot answer: {causes}, and the fallback could not answer either ({exc})."
            ) from exc
        return {
            i: (v, c, [f"fallback because {rows[i]}", what])
            for i, (v, c) in zip(index, values, strict=True)
        }

    def predict_features(
        self,
        ref: ModelRef,
        columns: dict[str, list[Any]],
        request_id: str = "",
        *,
        explain: bool = False,
    ) -> list[PredictionOut]:
        """Score feature vectors the client supplies (plain model serving, no lookup)."""
        received = self.clock()
        started = time.perf_counter()
        cpu_started = time.thread_time()
        loaded = self.load(ref)
        if explain:
            self.explainer(loaded)
        names = [f.name for f in loaded.fields]
        unknown = sorted(set(columns) - set(names))
        if unknown:
            raise InvalidInput(f"inputs: unknown feature {unknown[0]!r} for {ref}.")
        missing = [n for n in names if n not in columns]
        if missing:
            raise InvalidInput(f"inputs: missing feature {missing[0]!r} for {ref}.")
        n = len(columns[names[0]])
        if n == 0:
            raise InvalidInput("inputs: at least one row is required.")
        if n > self.max_rows:
            raise InvalidInput(f"inputs: {n} rows exceed the limit of {self.max_rows}.")
        arrays = {}
        for f in loaded.fields:
            values = columns[f.name]
            bad = next(
                (
                    v
                    for v in values
                    if v is not None and (isinstance(v, str) != f.categorical or _inexact_number(v))
                ),
                None,
            )
            if bad is not None:
                want = "text (BYTES)" if f.categorical else "numbers (NaN: missing; finite)"
                raise InvalidInput(f"inputs[{f.name!r}]: must be {want}, got {bad!r}.")
            arrays[f.name] = pa.array(values, pa.string() if f.categorical else pa.float64())
        table = pa.table(arrays)
        t = time.perf_counter()
        frame = feature_frame(table, loaded.fields)
        scores = score(loaded.batched, frame, loaded.task, loaded.serving["threshold"])
        self.observe("inference", time.perf_counter() - t)
        explained = (
            self._explain(loaded, frame, list(range(n)), scores.score, required=True)
            if explain
            else {}
        )
        request_id = request_id or uuid.uuid4().hex
        outs = []
        for i in range(n):
            conf = float(scores.confidence[i])
            if loaded.task is Task.CLASSIFICATION:
                row = {name: columns[name][i] for name in names}
                decision, reasons, issues = loaded.router.decide(conf, row, {})
                for issue in issues:
                    self.on_issue(issue.kind, issue.feature)
            else:
                decision, reasons = ACCEPT, ["regression: no confidence routing"]
            outs.append(
                PredictionOut(
                    request_id=request_id,
                    row_index=i,
                    model_name=ref.name,
                    model_version=str(ref.version),
                    score=float(scores.score[i]),
                    label=str(int(scores.label[i])) if loaded.task is Task.CLASSIFICATION else "",
                    confidence=conf if not np.isnan(conf) else 0.0,
                    decision=decision,
                    reasons=reasons,
                    explanation=explained.get(i),
                )
            )
        total = time.perf_counter() - started
        self.observe("total", total)
        cpu = time.thread_time() - cpu_started
        self.cpu(ref.name, str(ref.version), cpu)
        if self.log is not None:
            vectors = OnlineVectors(
                table=table,
                features=names,
                status={nm: ["PROVIDED"] * n for nm in names},
                event_time_us={},
            )
            self.log(ref.name, _log_table(loaded, None, vectors, outs, received, total, cpu))
        return outs


_NO_VALUE = ("NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE", "UNAVAILABLE")


def explanation_dict(e: Explanation, top: int = 0) -> dict[str, Any]:
    """An explanation as JSON-ready data (``top`` > 0: only the largest contributions)."""
    return {
        "base_value": e.base_value,
        "score": e.score,
        "attributions": [
            {"feature": a.feature, "contribution": a.contribution, "value": a.value}
            for a in e.top(top)
        ],
    }


def _label(task: Task, value: float, threshold: float) -> str:
    return str(int(value >= threshold)) if task is Task.CLASSIFICATION else ""


def _empty_vectors(loaded: LoadedModel, request: PredictInput, state: str) -> OnlineVectors:
    """Feature vectors with no feature values (the store could not be read)."""
    n = len(request.rows)
    columns: dict[str, Any] = {}
    for key in loaded.key_types:
        columns[key] = loaded.online.array(key, [r.entity_keys.get(key) for r in request.rows])
    for name in loaded.request_types:
        columns[name] = pa.array([r.request_data.get(name) for r in request.rows])
    for f in loaded.fields:
        columns[f.name] = pa.nulls(n, pa.string() if f.categorical else pa.float64())
    names = [f.name for f in loaded.fields]
    return OnlineVectors(
        table=pa.table(columns),
        features=names,
        status={f: [state] * n for f in names},
        event_time_us={},
    )


_INT_RANGE = {"INT64": 2**63, "INT32": 2**31}


def _inexact_number(value: Any) -> bool:
    """Infinite, or an integer a double cannot hold exactly (NaN is a missing value)."""
    if isinstance(value, float):
        return bool(np.isinf(value))
    return isinstance(value, int) and abs(value) > 2**53


def _check_fields(where: str, given: dict[str, Any], wanted: dict[str, str], what: str) -> None:
    for name in wanted:
        if name not in given or given[name] is None:
            raise InvalidInput(f"{where}: missing {what} {name!r}.")
    for name, value in given.items():
        if name not in wanted:
            raise InvalidInput(
                f"{where}: unknown {what} {name!r} (the model takes: "
                f"{', '.join(wanted) or 'none'})."
            )
        kind = wanted[name]
        ok = isinstance(value, _ACCEPTS.get(kind, (object,)))
        if isinstance(value, bool) and kind != "BOOL":
            ok = False
        if not ok:
            raise InvalidInput(
                f"{where}: {what} {name!r} must be {kind}, got {type(value).__name__} {value!r}."
            )
        if kind in ("DOUBLE", "FLOAT") and not np.isfinite(float(value)):
            raise InvalidInput(f"{where}: {what} {name!r} must be finite, got {value!r}.")
        if kind in _INT_RANGE and not -_INT_RANGE[kind] <= value < _INT_RANGE[kind]:
            raise InvalidInput(f"{where}: {what} {name!r}: {value} is outside the {kind} range.")
        if kind in ("DOUBLE", "FLOAT") and isinstance(value, int) and abs(value) > 2**53:
            raise InvalidInput(
                f"{where}: {what} {name!r}: the integer {value} has no exact {kind} value; "
                "send it as a double."
            )


def _feature_reasons(vectors: OnlineVectors, names: list[str], i: int) -> list[str]:
    missing = [n for n in names if vectors.status.get(n, [PRESENT])[i] not in (PRESENT, COMPUTED)]
    if not missing:
        return []
    return [
        "features without a value: " + ", ".join(f"{n} ({vectors.status[n][i]})" for n in missing)
    ]


def _log_table(
    loaded: LoadedModel,
    request: PredictInput | None,
    vectors: OnlineVectors,
    outs: list[PredictionOut],
    received: float,
    latency: float,
    cpu: float,
    role: str = "primary",
) -> pa.Table:
    """One row per prediction, in Feast's feature-logging layout where it fits:
    ``__request_id``, ``__timestamp``, ``__log_timestamp``, ``__log_date``, and per
    feature the value, ``<feature>__timestamp`` and ``<feature>__status``."""
    n = len(outs)
    now = datetime.now(UTC)
    ts_type = pa.timestamp("us", tz="UTC")
    cols: dict[str, pa.Array] = {
        "__request_id": pa.array([o.request_id for o in outs], pa.string()),
        "__row_index": pa.array([o.row_index for o in outs], pa.int32()),
        "__timestamp": pa.array([int(received * 1e6)] * n, ts_type),
        "__log_timestamp": pa.array([now] * n, ts_type),
        "__log_date": pa.array([now.date()] * n, pa.date32()),
        "model_name": pa.array([o.model_name for o in outs], pa.string()),
        "model_version": pa.array([o.model_version for o in outs], pa.string()),
        "role": pa.array([role] * n, pa.string()),
    }
    table = vectors.table
    for name in (*loaded.key_types, *loaded.request_types):
        if name in table.column_names:  # absent when the client sent the features itself
            cols[name] = table.column(name).combine_chunks()
    # Each feature's times and statuses: one Arrow array for all features, sliced (a pair
    # of arrays per feature cost ~0.2 ms a request, most of this table's cost).
    times = pa.array(
        [t for f in loaded.fields for t in vectors.event_time_us.get(f.name, [0] * n)], ts_type
    )
    states = pa.array(
        [s for f in loaded.fields for s in vectors.status.get(f.name, [PRESENT] * n)], pa.string()
    )
    for i, f in enumerate(loaded.fields):
        cols[f.name] = table.column(f.name).combine_chunks()
        cols[f"{f.name}__timestamp"] = times.slice(i * n, n)
        cols[f"{f.name}__status"] = states.slice(i * n, n)
    cols["score"] = pa.array([o.score for o in outs], pa.float64())
    cols["label"] = pa.array([o.label for o in outs], pa.string())
    # A regression has no confidence: logged as null, not as a number that could drift.
    regression = loaded.task is Task.REGRESSION
    cols["confidence"] = pa.array(
        [None if regression else o.confidence for o in outs], pa.float64()
    )
    cols["decision"] = pa.array([o.decision for o in outs], pa.string())
    cols["reasons"] = pa.array(["; ".join(o.reasons) for o in outs], pa.string())
    cols["latency_seconds"] = pa.array([latency] * n, pa.float64())
    # Each row's share of the request's CPU time: summed over rows, the CPU spent.
    cols["cpu_seconds"] = pa.array([cpu / n] * n, pa.float64())
    return pa.table(cols)
