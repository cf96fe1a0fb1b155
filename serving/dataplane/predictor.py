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

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from framework.errors import DataError
from framework.features.online import OnlineVectors, is_outage
from framework.logs.rows import LogRows
from framework.models.estimator import score
from framework.models.explain import Explainer, Explanation
from framework.models.model_input import FeatureColumns, feature_columns, supplied_columns
from framework.models.spec import Task
from framework.registry.model_registry import ModelRef, ModelRegistry
from serving.dataplane.batching import MicroBatcher
from serving.dataplane.errors import InternalError, InvalidInput, StoreUnavailable
from serving.dataplane.explanations import explain_rows, explanation_dict
from serving.dataplane.freshness import older_than_training
from serving.dataplane.log_rows import log_rows
from serving.dataplane.messages import (
    PredictInput,
    PredictionOut,
    RowInput,
    check_rows,
    provided_features,
)
from serving.dataplane.request_ids import new_request_id
from serving.dataplane.routing import ACCEPT, FALLBACK, REVIEW
from serving.dataplane.scoring import (
    empty_vectors,
    fallback_rows,
    fallback_scores,
    feature_reasons,
    label_of,
)
from serving.dataplane.versions import LoadedModel, ModelVersions, over_budget

__all__ = [
    "Predictor",
]
log = logging.getLogger("parity.serving")


@dataclass
class _Call:
    """One request on its way through :meth:`Predictor.predict`."""

    request: PredictInput
    role: str
    ref: ModelRef
    loaded: LoadedModel
    request_id: str
    received: float  # self.clock() when it arrived
    started: float  # time.perf_counter()
    cpu_started: float  # time.thread_time()
    #: CPU seconds this request's own thread spent before its rows joined a batch.
    own_cpu: float = 0.0

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.loaded.fields]


def _slice_outs(outs: list[PredictionOut], start: int, rows: int) -> list[PredictionOut]:
    return outs[start : start + rows]


def _merged(calls: list[_Call]) -> _Call:
    """One call holding the rows of ``calls`` (same version, role and flags), in order."""
    first = calls[0]
    if len(calls) == 1:
        return first
    request = PredictInput(
        model_name=first.request.model_name,
        rows=[row for c in calls for row in c.request.rows],
        request_id=first.request_id,
        return_features=any(c.request.return_features for c in calls),
    )
    return _Call(request, first.role, first.ref, first.loaded, first.request_id,
                 first.received, first.started, first.cpu_started)  # fmt: skip


class Predictor:
    """Scores requests with registered model versions and online features.

    Parameters
    ----------
    registry, store
        The model registry and the Feast store (the same one training used).
    max_rows
        The most rows one request may carry.
    log
        Called with (model name, the logged rows: LogRows) for every scored
        batch; ``serving.log.writer.PredictionLog.append`` in the server.
    clock
        Seconds since the epoch; TTLs are enforced against it.
    direct_reads
        Read SQLite and Redis online stores directly
        (:func:`framework.features.online_read.reader_for`); False: through Feast.
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
        log: Callable[[str, LogRows], None] | None = None,
        clock: Callable[[], float] = time.time,
        observe: Callable[[ModelRef, str, float], None] | None = None,
        feature_status: Callable[[ModelRef, dict[str, list[str]]], None] | None = None,
        cpu: Callable[[str, str, float], None] | None = None,
        review: Callable[[list[dict[str, Any]]], None] | None = None,
        on_fallback: Callable[[ModelRef, str], None] | None = None,
        on_issue: Callable[[ModelRef, str, str], None] | None = None,
        on_error: Callable[[str, str], None] | None = None,
        on_old_values: Callable[[ModelRef, str, int], None] | None = None,
        feature_timeout: float = 1.0,
        lookup_threads: int = 8,
        canary_share: float = 0.0,
        canary_alias: str = "challenger",
        shadow_alias: str | None = None,
        micro_batching: bool = True,
        compile_models: bool = True,
        direct_reads: bool = True,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.max_rows = max_rows
        self.log = log
        self.clock = clock
        # Metric callbacks, each given the version first.
        self.observe = observe or (lambda ref, stage, seconds: None)
        self.feature_status = feature_status or (lambda ref, status: None)
        self.review = review
        self.on_fallback = on_fallback or (lambda ref, cause: None)
        self.on_issue = on_issue or (lambda ref, kind, feature: None)
        # (model, stage) of each request parity failed through its own fault.
        self.on_error = on_error or (lambda model, stage: None)
        # (version, feature, values older than in training) per scored batch.
        self.on_old_values = on_old_values or (lambda ref, feature, count: None)
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
        self.micro_batching = micro_batching
        self._batchers = threading.Lock()  # making a version's request batcher
        self._merging = threading.local()  # .active: this thread runs a merged batch
        self.versions = ModelVersions(
            registry, store, clock=clock, max_rows=max_rows, feature_timeout=feature_timeout,
            lookups=self._lookups, micro_batching=micro_batching,
            compile_models=compile_models, thread_init=thread_init, direct_reads=direct_reads,
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
        return explain_rows(
            lambda: self.explainer(loaded),
            lambda stage, seconds: self.observe(loaded.ref, stage, seconds),
            frame, rows, scores, required=required,
        )  # fmt: skip

    # ------------------------------------------------------------ predict

    def validate(self, loaded: LoadedModel, rows: Sequence[RowInput]) -> None:
        """Every row carries exactly the keys and request data the version needs."""
        check_rows(loaded, rows, self.max_rows)

    def predict(self, request: PredictInput, *, role: str = "primary") -> list[PredictionOut]:
        """Score a request. ``role`` is "primary" for client calls, "shadow" for the copy
        a shadow version scores off the hot path (logged, never returned).

        With micro-batching on, concurrent requests for the same version are scored
        together (:meth:`_batched`); the answers are the same as one by one."""
        call = self._start(request, role)
        call.own_cpu = time.thread_time() - call.cpu_started
        if self.micro_batching and role == "primary" and not request.explain:
            outs: list[PredictionOut] = self._batched(call)
        else:
            outs = self._run([call])
        if role == "primary" and self.shadow_alias:
            self._shadow(call.ref, request, call.request_id)
        return outs

    def _batched(self, call: _Call) -> list[PredictionOut]:
        """``call`` scored in one run with the calls for its version that wait meanwhile:
        one online read, one model call and one log append for all their rows (in-process,
        a request of 8 rows costs 143 µs a row, a request of one row 386 µs). A call that
        finds its version idle runs at once; one that fails in a merged run is retried
        alone, so one request cannot fail the others merged with it."""
        loaded = call.loaded
        batcher = loaded.requests
        if batcher is None:
            with self._batchers:
                if loaded.requests is None:
                    loaded.requests = MicroBatcher(
                        # A run holds every waiting request's rows: no inner batchers.
                        functools.partial(self._run, merged_already=True), self.max_rows,
                        size=lambda part: len(part[0].request.rows),
                        merge=lambda parts: [c for part in parts for c in part],
                        split=_slice_outs, alone=(Exception,),
                    )  # fmt: skip
                batcher = loaded.requests
        outs: list[PredictionOut] = batcher([call])
        return outs

    def _run(self, calls: list[_Call], *, merged_already: bool = False) -> list[PredictionOut]:
        """Score the rows of ``calls`` (one version) in one read and one model call; their
        answers, in order. Each call's latency, CPU and log rows are its own."""
        cpu_run = time.thread_time()
        call = _merged(calls)
        merged = len(calls) > 1
        if merged:
            self._merging.active = True
        try:
            vectors, lookup_cpu, unscored = self._features(call, merged_already)
            inputs, scores, fallback = self._score(call, vectors, unscored, merged_already)
            # After scoring: a merged run that fails is retried call by call, counted there.
            old = self._old_values(calls, call.loaded, vectors)
        finally:
            if merged:
                self._merging.active = False
        request = call.request
        explained: dict[int, Explanation] = {}
        if request.explain and scores is not None:
            scored = [i for i in range(len(request.rows)) if i not in fallback]
            explained = self._explain(
                call.loaded, inputs.frame(), scored, scores.score, required=True
            )
        owners = [(c, j) for c in calls for j in range(len(c.request.rows))]
        outs, review, rows = [], [], []  # rows: each review item's row in the run
        for i, owner in enumerate(owners):
            out, item = self._answer(call, owner, vectors, scores, fallback, unscored,
                                     explained, i, old.get(i))  # fmt: skip
            outs.append(out)
            if item is not None:
                review.append(item)
                rows.append(i)
        if review and self.review is not None and call.role == "primary":
            # A reviewer sees why the model hesitated: the attributions of each item.
            unexplained = [row for row in rows if row not in explained]
            if unexplained and scores is not None:
                explained |= self._explain(
                    call.loaded, inputs.frame(), unexplained, scores.score, required=False
                )
            for r, row in zip(review, rows, strict=True):
                if (e := explained.get(row)) is not None:
                    r["explanation"] = explanation_dict(e)
            self.review(review)
        run_cpu = time.thread_time() - cpu_run + lookup_cpu
        self._account(calls, call.loaded, request, vectors, outs, run_cpu)
        return outs

    def _start(self, request: PredictInput, role: str) -> _Call:
        """The version the request means (a canary's share may go to the challenger),
        loaded, with the request checked against it."""
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
        request_id = request.request_id or new_request_id()
        return _Call(request, role, ref, loaded, request_id, received, started, cpu_started)

    def _features(
        self, call: _Call, merged_already: bool
    ) -> tuple[OnlineVectors, float, dict[int, str]]:
        """The online vectors, the lookup's CPU seconds, and the rows the model cannot
        score (row -> cause): all of them when the store is unavailable."""
        t = time.perf_counter()
        n = len(call.request.rows)
        lookup_cpu = 0.0
        try:
            vectors, lookup_cpu = self._read(call.loaded, call.request, merged_already)
        except InvalidInput:
            raise
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable) and not is_outage(exc):
                raise self._defect(call.ref, "feature_lookup", exc) from exc
            cause = f"online store unavailable: {' '.join(str(exc).split())[:200]}"
            vectors = empty_vectors(call.loaded, call.request, "UNAVAILABLE")
            unscored = {i: cause for i in range(n)}
        else:
            unscored = fallback_rows(call.loaded, vectors, call.names, n)
        self.observe(call.ref, "feature_lookup", time.perf_counter() - t)
        self.feature_status(call.ref, vectors.status)
        return vectors, lookup_cpu, unscored

    def _old_values(
        self, calls: list[_Call], loaded: LoadedModel, vectors: OnlineVectors
    ) -> dict[int, list[str]]:
        """Per row of the run, its reasons for values older than the version saw in
        training (none for a version whose manifest records no ages); each feature's
        count to ``on_old_values``."""
        limits = loaded.age_limits
        if limits is None or not vectors.event_time_us:
            return {}
        received = [int(c.received * 1_000_000) for c in calls for _ in c.request.rows]
        reasons, counts = older_than_training(limits, vectors, received)
        for feature, count in counts.items():
            self.on_old_values(loaded.ref, feature, count)
        return reasons

    def _score(
        self, call: _Call, vectors: OnlineVectors, unscored: dict[int, str], merged_already: bool
    ) -> tuple[FeatureColumns, Any, dict[int, tuple[float, float, list[str]]]]:
        """The model's input, its scores (None when no row can be scored) and the
        fallback's answers for the rows the model cannot score."""
        t = time.perf_counter()
        loaded = call.loaded
        scores = None
        try:
            inputs = feature_columns(
                loaded.fields, vectors.values, vectors.array, len(call.request.rows)
            )
        except DataError as exc:  # a value the store returned that the model cannot take
            raise self._defect(call.ref, "feature_lookup", exc) from exc
        if len(unscored) < len(call.request.rows):
            try:
                model = loaded.batched.alone if merged_already else loaded.batched
                scores = score(model, inputs, loaded.task, loaded.serving["threshold"])
            except Exception as exc:
                # The model failing on features the store returned is parity's failure
                # (a fallback would hide it behind an answer that looks valid).
                raise self._defect(call.ref, "inference", exc) from exc
        fallback = fallback_scores(loaded, call.request, unscored) if unscored else {}
        self.observe(call.ref, "inference", time.perf_counter() - t)
        return inputs, scores, fallback

    def _answer(
        self,
        call: _Call,
        owner: tuple[_Call, int],
        vectors: OnlineVectors,
        scores: Any,
        fallback: dict[int, tuple[float, float, list[str]]],
        unscored: dict[int, str],
        explained: dict[int, Explanation],
        i: int,
        old: list[str] | None = None,
    ) -> tuple[PredictionOut, dict[str, Any] | None]:
        """Row ``i``'s answer (row ``owner[1]`` of request ``owner[0]``), and the item for
        the review queue when it goes there; ``old``: its reasons for values older than
        in training (:mod:`serving.dataplane.freshness`)."""
        loaded, names, n = call.loaded, call.names, len(call.request.rows)
        asked, index = owner
        serving = loaded.serving
        values = {c: vectors.values(c)[i] for c in vectors.column_names}
        if i in fallback:
            value, conf, reasons = fallback[i]
            decision = FALLBACK
            label = label_of(loaded.task, value, serving["threshold"])
            self.on_fallback(call.ref, unscored[i].split(":")[0])
        else:
            assert scores is not None
            value, conf = float(scores.score[i]), float(scores.confidence[i])
            label = label_of(loaded.task, value, serving["threshold"])
            if loaded.task is Task.CLASSIFICATION:
                status = {f: vectors.status.get(f, ["PRESENT"] * n)[i] for f in names}
                decision, reasons, issues = loaded.router.decide(conf, values, status)
                for issue in issues:
                    self.on_issue(call.ref, issue.kind, issue.feature)
            else:
                decision, reasons = ACCEPT, ["regression: no confidence routing"]
            reasons += feature_reasons(vectors, names, i)
            if old:
                reasons += old
        if asked.request.explain and i in fallback:
            reasons = [*reasons, "no explanation: the fallback answered"]
        ref, request = call.ref, call.request
        out = PredictionOut(
            request_id=asked.request_id,
            row_index=index,
            model_name=ref.name,
            model_version=str(ref.version),
            score=value,
            label=label,
            confidence=conf if not np.isnan(conf) else 0.0,
            decision=decision,
            reasons=reasons,
            features={f: values.get(f) for f in names} if asked.request.return_features else None,
            explanation=explained.get(i),
        )
        if decision != REVIEW:
            return out, None
        return out, {
            "request_id": asked.request_id, "row_index": index, "model": ref.name,
            "version": str(ref.version), "score": value, "confidence": conf,
            "reasons": reasons, "entity_keys": request.rows[i].entity_keys,
            "features": {f: values.get(f) for f in names},
        }  # fmt: skip

    def _account(
        self,
        calls: list[_Call],
        loaded: LoadedModel,
        request: PredictInput | None,
        vectors: OnlineVectors,
        outs: list[PredictionOut],
        run_cpu: float,
    ) -> None:
        """Each call's latency and CPU to the metrics; their rows to the log, in one append.
        A call's CPU: its own thread's before the run, plus the run's (``run_cpu``, the
        lookup threads' included) in proportion to its rows."""
        rows = len(outs)
        received: list[float] = []
        latency: list[float] = []
        cpu: list[float] = []
        now = time.perf_counter()
        for c in calls:
            n = len(c.request.rows) if request is not None else rows
            total = now - c.started
            spent = c.own_cpu + run_cpu * n / rows
            self.observe(c.ref, "total", total)
            self.cpu(c.ref.name, str(c.ref.version), spent)
            received += [c.received] * n
            latency += [total] * n
            cpu += [spent / n] * n  # each row's share: summed over rows, the CPU spent
        if self.log is not None:
            logged = log_rows(loaded, request, vectors, outs, received, latency, cpu, calls[0].role)
            self.log(calls[0].ref.name, logged)

    def _defect(self, ref: ModelRef, stage: str, exc: BaseException) -> InternalError:
        """The error for a request parity failed through its own fault: logged once per
        cause (with its traceback), counted every time."""
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        what = "read the features the store returned" if stage == "feature_lookup" else "score"
        if getattr(self._merging, "active", False):  # each call is retried alone: counted there
            return InternalError(f"{ref}: parity could not {what}: {cause}")
        self.on_error(ref.name, stage)
        if cause not in self._logged_causes:
            self._logged_causes.add(cause)
            log.error("%s: %s failed (counted, answered INTERNAL): %s", ref, stage, cause,
                      exc_info=exc)  # fmt: skip
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

    def _read(
        self, loaded: LoadedModel, request: PredictInput, merged_already: bool = False
    ) -> tuple[OnlineVectors, float]:
        """The request's online vectors and the lookup CPU seconds spent on them."""
        rows = ([r.entity_keys for r in request.rows], [r.request_data for r in request.rows])
        if merged_already:
            return loaded.read(rows)
        try:
            return loaded.lookup(rows, timeout=self.feature_timeout)
        except FutureTimeout:  # waited a whole budget for other requests' reads
            raise over_budget(self.feature_timeout) from None

    def predict_features(
        self,
        ref: ModelRef,
        columns: dict[str, list[Any]],
        request_id: str = "",
        *,
        explain: bool = False,
    ) -> list[PredictionOut]:
        """Score feature vectors the client supplies (plain model serving, no lookup)."""
        clocks = (self.clock(), time.perf_counter(), time.thread_time())
        loaded = self.load(ref)
        if explain:
            self.explainer(loaded)
        given = provided_features(loaded, ref, columns, self.max_rows)
        names = [f.name for f in loaded.fields]
        n = len(given[names[0]])
        t = time.perf_counter()
        inputs = supplied_columns(loaded.fields, given, n)
        scores = score(loaded.batched, inputs, loaded.task, loaded.serving["threshold"])
        self.observe(ref, "inference", time.perf_counter() - t)
        explained = (
            self._explain(loaded, inputs.frame(), list(range(n)), scores.score, required=True)
            if explain
            else {}
        )
        request_id = request_id or new_request_id()
        outs = []
        for i in range(n):
            conf = float(scores.confidence[i])
            if loaded.task is Task.CLASSIFICATION:
                row = {name: given[name][i] for name in names}
                decision, reasons, issues = loaded.router.decide(conf, row, {})
                for issue in issues:
                    self.on_issue(ref, issue.kind, issue.feature)
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
        vectors = OnlineVectors(
            given,
            features=names,
            status={nm: ["PROVIDED"] * n for nm in names},
            event_time_us={},
            types={f.name: pa.string() if f.categorical else pa.float64() for f in loaded.fields},
        )
        received, started, cpu_started = clocks
        call = _Call(PredictInput(ref.name, []), "primary", ref, loaded, request_id, received,
                     started, cpu_started, own_cpu=time.thread_time() - cpu_started)  # fmt: skip
        self._account([call], loaded, None, vectors, outs, 0.0)
        return outs
