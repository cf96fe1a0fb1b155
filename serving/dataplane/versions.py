"""Model versions as the server holds them: which version a request means, and that
version loaded, once.

Aliases are re-read whenever the registry's history file changes, so moving an
alias takes effect on the next request without a restart; a version whose alias
moved to one that cannot load (a tampered artifact, changed definitions) keeps
serving. Each version is loaded once: artifact checksum verified, pinned
definitions checked against the Feast registry, its online read bound to the
timeout budget (and micro-batched), its fallback, and its compiled form
(:mod:`framework.models.compiled`) swapped in once verified, off the request path.
Explainers are built on first use.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from framework.errors import ConfigError, DataError
from framework.features.fields import FeatureField
from framework.features.online import OnlineFeatures, OnlineVectors
from framework.features.pinned import check_pinned
from framework.models.estimator import feature_frame
from framework.models.explain import Explainer, NotExplainable, load_explainer
from framework.models.manifest import Manifest, Probe
from framework.models.spec import Task
from framework.registry.model_registry import ModelRef, ModelRegistry
from serving.dataplane.batching import BatchedModel, MicroBatcher
from serving.dataplane.errors import (
    DefinitionsChanged,
    InternalError,
    InvalidInput,
    StoreUnavailable,
)
from serving.dataplane.freshness import AgeLimits
from serving.dataplane.routing import Router

log = logging.getLogger("parity.serving")
DEFAULT_ALIAS = "champion"
#: A version that failed to load is tried again after this long (a restored artifact).
RETRY_FAILED_LOAD_SECONDS = 30.0


@dataclass
class LoadedModel:
    """One model version, ready to score."""

    ref: ModelRef
    manifest: Manifest
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
    #: The same read for one caller alone, never merged: what a run of the predictor's
    #: request batcher calls (its rows are already every waiting request's).
    read: Callable[[tuple[list[Any], list[Any]]], tuple[OnlineVectors, float]]
    fallback: Any  # a fitted pipeline on request data, or None (then fallback_prior)
    fallback_fields: list[FeatureField]
    fallback_prior: float | None
    #: Each feature's oldest value the version saw in training (its p99), or None when its
    #: manifest records no ages (:mod:`serving.dataplane.freshness`).
    age_limits: AgeLimits | None = None
    #: Compiling the model (:mod:`framework.models.compiled`) off the request path: True
    #: once the compiled form scores, False when the scikit-learn model keeps scoring.
    compiling: Future[bool] | None = None
    #: The prediction log's schema for this version (serving.dataplane.log_rows), per
    #: (features looked up or supplied, entity and request columns present).
    log_schemas: dict[tuple[bool, tuple[str, ...]], Any] = field(default_factory=dict)
    #: Whole requests for this version scored together (a MicroBatcher made by the
    #: predictor on first use when micro-batching is on).
    requests: MicroBatcher[Any, Any] | None = None

    @property
    def serving(self) -> dict[str, Any]:
        return self.router.serving


def over_budget(seconds: float) -> StoreUnavailable:
    return StoreUnavailable(f"no answer within the {seconds:g}s budget")


class ModelVersions:
    """The versions a predictor serves (see the module docstring).

    ``lookups`` runs network stores' online reads (the request stops waiting after
    ``feature_timeout``); ``thread_init`` starts each compile thread (thread limits).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        store: Any,
        *,
        clock: Callable[[], float],
        max_rows: int,
        feature_timeout: float,
        lookups: ThreadPoolExecutor,
        micro_batching: bool = True,
        compile_models: bool = True,
        direct_reads: bool = True,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.max_rows = max_rows
        self.feature_timeout = feature_timeout
        self._lookups = lookups
        self.micro_batching = micro_batching
        self.compile_models = compile_models
        self.direct_reads = direct_reads
        self._compiler = ThreadPoolExecutor(
            1, thread_name_prefix="compile", initializer=thread_init
        )
        self._models: dict[ModelRef, LoadedModel] = {}
        self._explainers: dict[ModelRef, Explainer | NotExplainable] = {}
        self._aliases: dict[str, tuple[tuple[int, int], dict[str, int]]] = {}
        self._histories: dict[str, str] = {}  # model name -> its history file
        # Per (model, alias): the version it last served, kept while a newer one cannot load.
        self._alias_served: dict[tuple[str, str], int] = {}
        self._kept: set[tuple[str, str, int]] = set()
        # Versions that failed to load: (when to try again, why), answered without retrying.
        self._failed: dict[ModelRef, tuple[float, Exception]] = {}
        self._lock = threading.Lock()
        self._ready = False

    def loaded(self) -> list[ModelRef]:
        """The versions loaded so far."""
        return list(self._models)

    def close(self) -> None:
        """Stop compiling; close the store connections the versions' readers opened."""
        self._compiler.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            loaded = list(self._models.values())
        for model in loaded:
            model.online.close()

    def ready(self) -> bool:
        """True once :meth:`warm_up` has loaded the models the server starts with."""
        return self._ready

    def warm_up(self, addresses: Sequence[str]) -> tuple[list[ModelRef], dict[str, str]]:
        """Load the given models (``name``, ``name@alias``, ``name:version``) before serving.

        Returns the loaded versions and, per address that failed, why. A model that
        cannot load does not stop the server (its requests get the error's status);
        the server reports ready only when every model loaded and read its features
        (:meth:`probe`).
        """
        refs, failed = [], {}
        for address in addresses:
            try:
                ref = self.registry.resolve(address)
                loaded = self.load(ref)
                self.probe(loaded)
                if loaded.compiling is not None:
                    loaded.compiling.result()  # the first requests are scored compiled
                refs.append(ref)
            except Exception as exc:
                failed[address] = str(exc)
        self._ready = not failed
        return refs, failed

    def probe(self, loaded: LoadedModel) -> None:
        """Read the version's features once, for the entity rows and request data its
        manifest keeps from training (``probe``), and score them: what parity cannot do
        with what the store returns is found here, before the server reports ready, and
        named (the feature, the reason), not at the first request.

        A store that cannot be reached now is no such finding (requests will fall back
        while it is down): logged, and the check is left to the requests."""
        from framework.features.online import is_outage
        from framework.models.estimator import score

        probe = loaded.manifest.probe or Probe()
        rows = [_from_json(row) for row in probe.entity_rows]
        if not rows:
            log.info("%s: no probe rows in its manifest; features are read first by requests",
                     loaded.ref)  # fmt: skip
            return
        request = [_from_json(r) for r in probe.request_data] or [{} for _ in rows]
        try:
            vectors, _ = loaded.lookup((rows, request), timeout=self.feature_timeout)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable | FutureTimeout) or is_outage(exc):
                log.warning(
                    "%s: the online store could not be read to check its features (%s); "
                    "requests will fall back while it is down", loaded.ref, exc,
                )  # fmt: skip
                return
            raise InternalError(
                f"{loaded.ref} cannot be served: reading its features failed: {exc}"
            ) from exc
        try:
            frame = feature_frame(vectors.table, loaded.fields)
            score(loaded.model, frame, loaded.task, loaded.serving["threshold"])
        except Exception as exc:
            raise InternalError(
                f"{loaded.ref} cannot be served: it cannot score the features the store "
                f"returned: {type(exc).__name__}: {exc}"
            ) from exc

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
        aliases = self.alias_map(name)
        if alias not in aliases:
            return self.registry.resolve(f"{name}@{alias}")  # raises NotFoundError, worded
        return self.servable(name, alias, aliases[alias])

    def servable(self, name: str, alias: str, version: int) -> ModelRef:
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

    def alias_map(self, name: str) -> dict[str, int]:
        """``name``'s aliases, read again only when its history file changed. Kept only
        for names the registry holds (a client's made-up names must not grow memory)."""
        path = self._histories.get(name)
        known = path is not None
        if path is None:  # a str, made once: pathlib's joins cost more than the stat
            path = str(self.registry.root / name / "history.jsonl")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return self.registry.aliases(name)
        stamp = (st.st_mtime_ns, st.st_size)
        if not known:
            self._histories[name] = path
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
        return sorted(a for a, v in self.alias_map(ref.name).items() if v == ref.version)

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
        model, manifest = Manifest.load(self.registry, ref)
        service = manifest.feature_service
        pinned = check_pinned(self.store, service, manifest.fields, manifest.definitions_digest)
        if not pinned.ok:
            raise DefinitionsChanged(
                f"{ref} was trained on definitions of {service!r} that no longer match the "
                f"Feast registry ({pinned.detail}); retrain or re-apply the definitions."
            )
        online = OnlineFeatures(self.store, service, clock=self.clock, direct=self.direct_reads)
        loaded = LoadedModel(
            ref=ref,
            manifest=manifest,
            model=model,
            fields=manifest.fields,
            task=manifest.task,
            online=online,
            key_types=dict(online.key_types),
            request_types=dict(manifest.request_data),
            router=Router.from_manifest(manifest),
            age_limits=AgeLimits.of(manifest),
            batched=BatchedModel(model, self.max_rows, batching=self.micro_batching),
            **self._lookups_for(online),
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

        from framework.models.compiled import compile_model

        ref = loaded.ref
        try:
            if loaded.manifest.smoke is None:
                raise ValueError("the version has no smoke sample to verify a compiled form on")
            smoke = pq.read_table(self.registry.version_dir(ref) / loaded.manifest.smoke.file)
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

    def _lookups_for(self, online: OnlineFeatures) -> dict[str, Any]:
        """``lookup`` and ``read`` of a :class:`LoadedModel`: the online read of a version
        within the timeout budget (a slow store counts as unavailable), returning the
        vectors and the CPU seconds the read took on a lookup thread. A network store is
        read on a lookup thread the request stops waiting for after the budget; a local
        SQLite store bounds its own wait (its busy timeout). With micro-batching,
        ``lookup`` reads concurrent callers' rows in one call (its fixed cost is most of a
        one-row read); ``read`` is the same read for one caller alone."""

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
                raise over_budget(self.feature_timeout) from None

        if not self.micro_batching:
            return {"lookup": lambda rows, timeout=None: within_budget(rows), "read": within_budget}

        def merge(parts: Sequence[tuple[list[Any], list[Any]]]) -> tuple[list[Any], list[Any]]:
            return [k for p in parts for k in p[0]], [d for p in parts for d in p[1]]

        def split(
            out: tuple[OnlineVectors, float], start: int, rows: int
        ) -> tuple[OnlineVectors, float]:
            vectors, cpu = out
            return vectors.slice(start, rows), cpu * rows / max(1, vectors.num_rows)

        batcher: MicroBatcher[Any, Any] = MicroBatcher(
            within_budget,
            self.max_rows,
            size=lambda rows: len(rows[0]),
            merge=merge,
            split=split,
            alone=(DataError, InvalidInput),
        )
        return {"lookup": batcher, "read": within_budget}

    def _load_fallback(self, ref: ModelRef, manifest: Manifest) -> dict[str, Any]:
        from framework.registry import artifact

        spec = manifest.fallback or {"kind": "none"}
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
        return load_explainer(self.registry, loaded.model, loaded.manifest)


def _from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A probe row as training wrote it (bytes as ``{"base64": ...}``)."""
    import base64

    return {
        k: base64.b64decode(v["base64"]) if isinstance(v, dict) and "base64" in v else v
        for k, v in row.items()
    }
