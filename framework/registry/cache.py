"""The SQL registry's cache: refreshed off the request path, kept through outages.

Feast 0.67's ``CachingRegistry`` (the SQL registry's base) refreshes an expired
cache inside whichever call finds it expired. When that refresh fails it logs
at DEBUG only, keeps the previous snapshot and leaves the cache expired, so
every later read retries the refresh, synchronously, on the request path: each
retry costs a connection attempt (milliseconds against a refused port, up to
the TCP connect timeout against an unreachable host, far beyond a request's
feature budget), and nobody is told the registry is down.

:func:`install` changes that for one registry:

- an expired cache with a snapshot is refreshed by one background thread
  while callers keep using the snapshot (Feast's behaviour when the cache is
  still empty is unchanged: it loads synchronously);
- a failed refresh keeps the last good snapshot; the outage is logged once as a
  WARNING naming the registry (never its password) and the reason, retried
  every ``retry_seconds``, counted in :class:`RegistryHealth`, and its end is
  logged once;
- a successful refresh replaces the snapshot, as in Feast.

:func:`keep_fresh` refreshes an expired cache even when nothing reads the registry
(the server's requests read the online store directly).

Refreshes Feast runs itself after its own writes (``sync`` cache mode) go
through the same accounting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from framework import feast_private

log = logging.getLogger("parity.registry")
#: The longest wait between two refresh attempts during an outage.
MAX_RETRY_SECONDS = 5.0


@dataclass
class RegistryHealth:
    """Refresh outcomes of one registry since the store was opened."""

    where: str
    refreshes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_since: float | None = None  # time.time() of the first failure of an outage
    last_error: str = ""
    snapshot_at: float | None = None  # time.time() of the snapshot in use

    @property
    def reachable(self) -> bool:
        return self.down_since is None


class _Refresher:
    def __init__(self, registry: Any, where: str) -> None:
        self.registry = registry
        self.health = RegistryHealth(where, snapshot_at=time.time())
        ttl = registry.cached_registry_proto_ttl.total_seconds()
        self.retry_seconds = min(ttl, MAX_RETRY_SECONDS) if ttl > 0 else MAX_RETRY_SECONDS
        self.closed = False
        self._busy = threading.Lock()  # held while a refresh runs
        self._next_attempt = 0.0  # time.monotonic()
        self._feast_refresh_if_necessary = feast_private.registry_refresh_hook(registry)

    def refresh_if_necessary(self) -> None:
        registry = self.registry
        if registry.cache_mode != "sync" or not self._has_snapshot():
            self._feast_refresh_if_necessary()  # Feast's own path (first load, thread mode)
            return
        if registry.is_cache_valid() or time.monotonic() < self._next_attempt:
            return
        if not self._busy.acquire(blocking=False):
            return  # a refresh is already running
        try:
            threading.Thread(
                target=self._background, name="parity-registry-refresh", daemon=True
            ).start()
        except BaseException:
            self._busy.release()
            raise

    def refresh(self, project: str | None = None) -> None:
        """Load a new snapshot now (Feast's ``refresh``, with the outage accounting)."""
        registry = self.registry
        try:
            proto = registry.proto()
        except Exception as exc:
            self._failed(exc)
            return
        registry.cached_registry_proto = proto
        registry.cached_registry_proto_created = datetime.now(UTC)
        self._succeeded()

    def _background(self) -> None:
        try:
            self.refresh()
        finally:
            self._busy.release()

    def _has_snapshot(self) -> bool:
        from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

        proto = self.registry.cached_registry_proto
        return proto is not None and proto != RegistryProto()

    def _failed(self, exc: BaseException) -> None:
        h = self.health
        h.failures += 1
        h.consecutive_failures += 1
        reason = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper adds a help link
        h.last_error = " ".join(str(reason).split())[:300] or type(reason).__name__
        self._next_attempt = time.monotonic() + self.retry_seconds
        if self.closed:
            return
        if h.down_since is None:
            h.down_since = time.time()
            since = datetime.fromtimestamp(h.snapshot_at or 0, UTC).isoformat(timespec="seconds")
            log.warning(
                "Feast registry refresh failed (%s): %s; serving the definitions loaded at %s "
                "until it is reachable again (retrying every %gs)",
                h.where, h.last_error, since, self.retry_seconds,
            )  # fmt: skip
        else:
            log.debug("Feast registry refresh failed again (%s): %s", h.where, h.last_error)

    def _succeeded(self) -> None:
        h = self.health
        h.refreshes += 1
        h.snapshot_at = time.time()
        self._next_attempt = 0.0
        if h.down_since is not None:
            log.info(
                "Feast registry reachable again (%s) after %d failed refreshes over %.1fs",
                h.where, h.consecutive_failures, time.time() - h.down_since,
            )  # fmt: skip
        h.down_since = None
        h.consecutive_failures = 0


def install(registry: Any, where: str) -> RegistryHealth | None:
    """Refresh ``registry``'s cache as described above; ``None`` if it has no such cache
    (Feast's file registry)."""
    from feast.infra.registry.caching_registry import CachingRegistry

    if not isinstance(registry, CachingRegistry):
        return None
    existing = getattr(registry, "_parity_refresher", None)
    if isinstance(existing, _Refresher):
        return existing.health
    refresher = _Refresher(registry, where)
    registry._parity_refresher = refresher
    registry.refresh = refresher.refresh
    feast_private.replace_registry_refresh_hook(registry, refresher.refresh_if_necessary)
    return refresher.health


def health(store: Any) -> RegistryHealth | None:
    """The registry health of a store opened by :func:`framework.features.repository.load_store`
    (``None`` for registries without a cache to keep, e.g. the embedded file registry)."""
    refresher = getattr(feast_private.store_registry(store), "_parity_refresher", None)
    return refresher.health if isinstance(refresher, _Refresher) else None


def keep_fresh(store: Any) -> Callable[[], None]:
    """Refresh the store's registry cache when it expires even if nothing reads it; returns
    the function that stops it (a no-op for registries without a cache to keep).

    The server's requests read the online store directly, not the registry, so without
    this an expired cache would be refreshed (and an outage noticed, counted and its end
    logged) only when something else happens to read the registry."""
    refresher = getattr(feast_private.store_registry(store), "_parity_refresher", None)
    if not isinstance(refresher, _Refresher):
        return lambda: None
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(refresher.retry_seconds):
            try:
                refresher.refresh_if_necessary()
            except Exception:  # the refresh itself accounts for failures; never die here
                log.exception("registry cache refresh tick failed")

    threading.Thread(target=tick, name="parity-registry-keeper", daemon=True).start()
    return stop.set


def close(store: Any) -> None:
    """Stop reporting refresh failures (the store is closing; its engines go away)."""
    refresher = getattr(feast_private.store_registry(store), "_parity_refresher", None)
    if isinstance(refresher, _Refresher):
        refresher.closed = True
