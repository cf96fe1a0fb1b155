"""The transport-free predictor: from entity keys and request data to decisions.

The predict path, per request: resolve the model version (an exact version,
an alias, or ``champion``) -> validate every row against what the version
expects (its entity join keys and request-data fields, with types) -> read the
online feature vectors of its pinned feature service with TTL enforced and
on-demand features computed by Feast's code (:mod:`framework.online`) -> score
with the version's own pipeline -> confidence and decision (ACCEPT / VALIDATE /
REVIEW by the version's serving thresholds) -> log every row to the
prediction log. Nothing here knows gRPC: servicers convert protobuf to these
types and back.

Model versions are loaded once (artifact checksum verified, definitions
checked against the Feast registry) and cached; aliases are re-read whenever
the registry's history file changes, so moving an alias takes effect on the
next request without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from framework.errors import ConfigError, DataError
from framework.estimator import FeatureField, feature_frame, score
from framework.explain import BACKGROUND_FILE, Explainer, Explanation, NotExplainable
from framework.model_spec import Task
from framework.online import COMPUTED, PRESENT, OnlineFeatures, OnlineVectors
from framework.registry import ModelRef, ModelRegistry
from serving.batching import BatchedModel, MicroBatcher
from serving.errors import DefinitionsChanged, InvalidInput, StoreUnavailable
from serving.routing import ACCEPT, FALLBACK, REVIEW, VALIDATE, Router

__all__ = ["ACCEPT", "FALLBACK", "REVIEW", "VALIDATE", "Predictor"]
log = logging.getLogger("parity.serving")
DEFAULT_ALIAS = "champion"
#: A version that failed to load is tried again after this long (a restored artifact).
RETRY_FAILED_LOAD_SECONDS = 30.0

# Python types a request value may have, per Feast value type name.
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "INT64": (int,),
    "INT32": (int,),
    "DOUBLE": (float, int),
    "FLOAT": (float, int),
    "STRING": (str,),
    "BOOL": (bool,),
    "BYTES": (bytes,),
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


@dataclass
class LoadedModel:
    """One model version, ready to score."""

    ref: ModelRef
    manifest: dict[str, Any]
    model: Any
    fields: list[FeatureField]
    task: Task
    online: OnlineFeatures
    key_types: dict[str, str]
    request_types: dict[str, str]
    router: Router
    batched: BatchedModel  # the model behind micro-batchers; its compiled form once verified
    #: (entity rows, request data) -> (vectors, lookup CPU seconds), within the budget;
    #: a MicroBatcher merging concurrent requests' reads when micro-batching is on.
    lookup: Callable[..., tuple[OnlineVectors, float]]
    fallback: Any  # a fitted pipeline on request data, or None (then fallback_prior)
    fallback_fields: list[FeatureField]
    fallback_prior: float | None
    #: Compiling the model (:mod:`framework.compiled_model`) off the request path: True
    #: once the compiled form scores, False when the scikit-learn model keeps scoring.
    compiling: Future[bool] | None = None

    @property
    def serving(self) -> dict[str, Any]:
        return self.manifest["serving"]  # type: ignore[no-any-return]


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
        batch; ``serving.prediction_log.PredictionLog.append`` in the server.
    clock
        Seconds since the epoch; TTLs are enforced against it.
    compile_models
        Score each version with its compiled form (:mod:`framework.compiled_model`,
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
        self.feature_timeout = feature_timeout
        self._lookups = ThreadPoolExecutor(
            lookup_threads, thread_name_prefix="lookup", initializer=thread_init
        )
        self._shadows = ThreadPoolExecutor(1, thread_name_prefix="shadow", initializer=thread_init)
        self.canary_share = canary_share
        self.canary_alias = canary_alias
        self.shadow_alias = shadow_alias
        self.micro_batching = micro_batching
        self.compile_models = compile_models
        self._compiler = ThreadPoolExecutor(
            1, thread_name_prefix="compile", initializer=thread_init
        )
        # (model, version, CPU seconds of one scored request): the cost metric.
        self.cpu = cpu or (lambda model, version, seconds: None)
        self._models: dict[ModelRef, LoadedModel] = {}
        self._explainers: dict[ModelRef, Explainer | NotExplainable] = {}
        self._aliases: dict[str, tuple[tuple[int, int], dict[str, int]]] = {}
        # Per (model, alias): the version it last served, kept while a newer one cannot load.
        self._alias_served: dict[tuple[str, str], int] = {}
        self._kept: set[tuple[str, str, int]] = set()
        # Versions that failed to load: (when to try again, why), answered without retrying.
        self._failed: dict[ModelRef, tuple[float, Exception]] = {}
        self._lock = threading.Lock()
        self._ready = False

    def ready(self) -> bool:
        """True once :meth:`warm_up` has loaded the models the server starts with."""
        return self._ready

    def warm_up(self, addresses: Sequence[str]) -> tuple[list[ModelRef], dict[str, str]]:
        """Load the given models (``name``, ``name@alias``, ``name:version``) before serving.

        Returns the loaded versions and, per address that failed, why. A model that
        cannot load does not stop the server (its requests get the error's status);
        the server reports ready only when every model loaded.
        """
        refs, failed = [], {}
        for address in addresses:
            try:
                ref = self.registry.resolve(address)
                loaded = self.load(ref)
                if loaded.compiling is not None:
                    loaded.compiling.result()  # the first requests are scored compiled
                refs.append(ref)
            except Exception as exc:
                failed[address] = str(exc)
        self._ready = not failed
        return refs, failed

    # ------------------------------------------------------------ versions

    def resolve(self, name: str, version: str | None = None, alias: str | None = None) -> ModelRef:
        """The exact version a request means (default: the champion)."""
        if not name:
            raise InvalidInput("model_name: required.")
        try:
            self.registry._check_name(name)  # before the name becomes a path
        except ConfigError as exc:
            raise InvalidInput(f"model_name: {exc}") from None
        if version and alias:
            raise InvalidInput("model_version and model_alias: give at most one.")
        if version:
            if not version.isascii() or not version.isdigit() or len(version) > 9:
                raise InvalidInput(f"model_version: must be a number, got {version!r}.")
            return self.registry.resolve(f"{name}:{version}")
        alias = alias or DEFAULT_ALIAS
        aliases = self._alias_map(name)
        if alias not in aliases:
            return self.registry.resolve(f"{name}@{alias}")  # raises NotFoundError, worded
        return self._servable(name, alias, aliases[alias])

    def _servable(self, name: str, alias: str, version: int) -> ModelRef:
        """``name@alias``'s version if it loads, else the version the alias served before.

        A version that cannot load (a tampered or corrupt artifact, changed definitions)
        never replaces one that serves: the alias keeps its previous version (logged once),
        and requests naming the broken version get its error."""
        ref = ModelRef(name, version)
        previous = self._alias_served.get((name, alias))
        if previous == version:
            return ref
        try:
            self.load(ref)
        except Exception as exc:
            if previous is None:
                raise
            if (name, alias, version) not in self._kept:
                self._kept.add((name, alias, version))
                log.error(
                    "%s@%s now points to version %d, which cannot be served (%s); "
                    "still serving version %d", name, alias, version, exc, previous,
                )  # fmt: skip
            return ModelRef(name, previous)
        self._alias_served[(name, alias)] = version
        return ref

    def _alias_map(self, name: str) -> dict[str, int]:
        path = self.registry.root / name / "history.jsonl"
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        cached = self._aliases.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        aliases = self.registry.aliases(name)
        self._aliases[name] = (stamp, aliases)
        return aliases

    def logged_fields(self) -> set[str]:
        """Entity keys, request fields and features of the loaded models (what a
        prediction log row may carry besides its own columns)."""
        out: set[str] = set()
        for loaded in list(self._models.values()):
            out.update(loaded.key_types, loaded.request_types, (f.name for f in loaded.fields))
        return out

    def aliases_of(self, ref: ModelRef) -> list[str]:
        return sorted(a for a, v in self._alias_map(ref.name).items() if v == ref.version)

    def load(self, ref: ModelRef) -> LoadedModel:
        """The version, loaded once: checksum verified, definitions checked."""
        loaded = self._models.get(ref)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._models.get(ref)
            if loaded is None:
                retry_at, error = self._failed.get(ref, (0.0, None))
                if error is not None and time.monotonic() < retry_at:
                    raise error.with_traceback(None)  # no reload (and no log) per request
                try:
                    loaded = self._load(ref)
                except Exception as exc:
                    self._failed[ref] = (time.monotonic() + RETRY_FAILED_LOAD_SECONDS, exc)
                    log.error("model %s cannot be served: %s", ref, exc)
                    raise
                self._failed.pop(ref, None)
                self._models[ref] = loaded
        return loaded

    def _load(self, ref: ModelRef) -> LoadedModel:
        from framework.training_set import feature_contract

        model, manifest = self.registry.load(ref)
        service = manifest["feature_service"]
        try:
            contract = feature_contract(self.store, service)
        except Exception as exc:
            raise DefinitionsChanged(
                f"{ref} reads feature service {service!r}, which the Feast registry no longer "
                f"resolves: {exc}"
            ) from exc
        if contract.definitions_digest != manifest["definitions_digest"]:
            pinned = {(f["view"], f["name"]) for f in manifest["features"]}
            now = {(f.view, f.name) for f in contract.fields}
            missing = sorted(f"{v}:{n}" for v, n in pinned - now)
            detail = f"missing now: {', '.join(missing)}" if missing else "definitions changed"
            raise DefinitionsChanged(
                f"{ref} was trained on definitions of {service!r} that no longer match the "
                f"Feast registry ({detail}); retrain or re-apply the definitions."
            )
        online = OnlineFeatures(self.store, service, clock=self.clock)
        loaded = LoadedModel(
            ref=ref,
            manifest=manifest,
            model=model,
            fields=[FeatureField(**f) for f in manifest["features"]],
            task=Task(manifest["task"]),
            online=online,
            key_types={k: "INT64" for k in manifest["join_keys"]},
            request_types=dict(manifest["request_data"]),
            router=Router.from_manifest(manifest),
            batched=BatchedModel(model, self.max_rows, batching=self.micro_batching),
            lookup=self._lookup_for(online),
            **self._load_fallback(ref, manifest),
        )
        if self.compile_models:
            loaded.compiling = self._compiler.submit(self._compile, loaded)
        return loaded

    def _compile(self, loaded: LoadedModel) -> bool:
        """Score ``loaded`` with its compiled form from now on, if that form exists and
        gives the scikit-learn model's numbers on the version's smoke sample and on rows of
        its own making (until then, and otherwise, scikit-learn scores)."""
        import pyarrow.parquet as pq

        from framework.compiled_model import compile_model

        ref = loaded.ref
        try:
            smoke = pq.read_table(self.registry.version_dir(ref) / loaded.manifest["smoke"]["file"])
            frames = [feature_frame(smoke, loaded.fields)]
            compiled = compile_model(
                loaded.model, frames,
                on_refusal=lambda why: log.warning("%s is scored by scikit-learn: %s", ref, why),
            )  # fmt: skip
        except Exception:
            log.exception("%s is scored by scikit-learn: compiling it failed", ref)
            return False
        if compiled is None:
            return False
        loaded.batched.use(compiled)
        log.info("%s is scored by its compiled form (same numbers as scikit-learn)", ref)
        return True

    def _lookup_for(self, online: OnlineFeatures) -> Callable[..., tuple[OnlineVectors, float]]:
        """The online read of a version within the timeout budget (a slow store counts as
        unavailable), returning the vectors and the CPU seconds the read took on a lookup
        thread. A network store is read on a lookup thread the request stops waiting for
        after the budget; a local SQLite store bounds its own wait (its busy timeout).
        With micro-batching, concurrent requests' rows are read in one
        ``get_online_features`` call (its fixed cost is most of a one-row read)."""

        def read(rows: tuple[list[Any], list[Any]]) -> tuple[OnlineVectors, float]:
            started = time.thread_time()
            vectors = online.read(rows[0], rows[1])
            return vectors, time.thread_time() - started

        # A store that bounds its own reads (a local SQLite file) is read on the calling
        # request's thread: handing a 1.5 ms read to a lookup thread and back cost about
        # 2 ms of sequential latency here (two cross-core wake-ups). Its CPU is then
        # counted on that thread already (0.0 below).
        inline = online.bound_reads(self.feature_timeout)

        def within_budget(rows: tuple[list[Any], list[Any]]) -> tuple[OnlineVectors, float]:
            if inline:
                return online.read(rows[0], rows[1]), 0.0
            future = self._lookups.submit(read, rows)
            try:
                return future.result(timeout=self.feature_timeout)
            except FutureTimeout:
                future.cancel()
                raise self._over_budget() from None

        if not self.micro_batching:
            return lambda rows, timeout=None: within_budget(rows)

        def merge(parts: Sequence[tuple[list[Any], list[Any]]]) -> tuple[list[Any], list[Any]]:
            return [k for p in parts for k in p[0]], [d for p in parts for d in p[1]]

        def split(
            out: tuple[OnlineVectors, float], start: int, rows: int
        ) -> tuple[OnlineVectors, float]:
            vectors, cpu = out
            return vectors.slice(start, rows), cpu * rows / max(1, vectors.table.num_rows)

        return MicroBatcher(
            within_budget,
            self.max_rows,
            size=lambda rows: len(rows[0]),
            merge=merge,
            split=split,
            alone=(DataError, InvalidInput),
        )

    def _load_fallback(self, ref: ModelRef, manifest: dict[str, Any]) -> dict[str, Any]:
        from framework import artifact

        spec = manifest.get("fallback") or {"kind": "none"}
        if spec["kind"] == "model":
            path = self.registry.version_dir(ref) / spec["file"]
            return {
                "fallback": artifact.load(path, spec["sha256"]),
                "fallback_fields": [FeatureField(**f) for f in spec["features"]],
                "fallback_prior": None,
            }
        prior = spec.get("score") if spec["kind"] == "prior" else None
        return {"fallback": None, "fallback_fields": [], "fallback_prior": prior}

    def explainer(self, loaded: LoadedModel) -> Explainer:
        """The version's explainer, built once (raises :class:`NotExplainable`)."""
        found = self._explainers.get(loaded.ref)
        if found is None:
            with self._lock:
                found = self._explainers.get(loaded.ref)
                if found is None:
                    try:
                        found = self._build_explainer(loaded)
                    except NotExplainable as exc:
                        found = exc
                    self._explainers[loaded.ref] = found
        if isinstance(found, NotExplainable):
            raise NotExplainable(str(found))
        return found

    def _build_explainer(self, loaded: LoadedModel) -> Explainer:
        import hashlib as _hashlib

        import pyarrow.parquet as pq

        spec = loaded.manifest.get("explanation")
        if not spec:
            raise NotExplainable(
                f"{loaded.ref} was registered without an explainer (before explanations "
                "existed); retrain it to explain its predictions."
            )
        if not spec.get("method"):
            raise NotExplainable(f"{loaded.ref} cannot be explained: {spec.get('reason')}.")
        path = self.registry.version_dir(loaded.ref) / BACKGROUND_FILE
        data = path.read_bytes()
        if _hashlib.sha256(data).hexdigest() != spec["background"]["sha256"]:
            raise NotExplainable(f"{loaded.ref}: {BACKGROUND_FILE} does not match its checksum.")
        import io

        background = feature_frame(pq.read_table(io.BytesIO(data)), loaded.fields)
        return Explainer(loaded.model, loaded.fields, loaded.task, background)

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
                log.exception("model %s failed", ref)
                cause = f"model error: {type(exc).__name__}: {exc}"
                fallback_rows = {i: cause for i in range(n)}
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

    def _canary(self, champion: ModelRef, row: RowInput) -> ModelRef:
        """The challenger for a stable ``canary_share`` of entities, else the champion."""
        if self.canary_share <= 0:
            return champion
        challenger = self._alias_map(champion.name).get(self.canary_alias)
        if challenger is None or challenger == champion.version:
            return champion
        key = "|".join(f"{k}={row.entity_keys[k]}" for k in sorted(row.entity_keys))
        digest = hashlib.blake2b(f"{champion.name}|{key}".encode(), digest_size=8).digest()
        if int.from_bytes(digest, "big") / 2**64 < self.canary_share:
            try:
                return self._servable(champion.name, self.canary_alias, challenger)
            except Exception:
                return champion  # a challenger that cannot load: the champion answers
        return champion

    def _shadow(self, served: ModelRef, request: PredictInput, request_id: str) -> None:
        """Score a copy of the request with the shadow alias's version, in the background."""
        version = self._alias_map(served.name).get(self.shadow_alias or "")
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
        self._compiler.shutdown(wait=False, cancel_futures=True)

    def _read(self, loaded: LoadedModel, request: PredictInput) -> tuple[OnlineVectors, float]:
        """The request's online vectors and the lookup CPU seconds spent on them."""
        rows = ([r.entity_keys for r in request.rows], [r.request_data for r in request.rows])
        try:
            return loaded.lookup(rows, timeout=self.feature_timeout)
        except FutureTimeout:  # waited a whole budget for other requests' reads
            raise self._over_budget() from None

    def _over_budget(self) -> StoreUnavailable:
        return StoreUnavailable(f"no answer within the {self.feature_timeout:g}s budget")

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
        columns[key] = pa.array([r.entity_keys.get(key) for r in request.rows], pa.int64())
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
    cols["confidence"] = pa.array([o.confidence for o in outs], pa.float64())
    cols["decision"] = pa.array([o.decision for o in outs], pa.string())
    cols["reasons"] = pa.array(["; ".join(o.reasons) for o in outs], pa.string())
    cols["latency_seconds"] = pa.array([latency] * n, pa.float64())
    # Each row's share of the request's CPU time: summed over rows, the CPU spent.
    cols["cpu_seconds"] = pa.array([cpu / n] * n, pa.float64())
    return pa.table(cols)
