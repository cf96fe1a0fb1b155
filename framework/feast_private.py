"""Every Feast private API parity uses, one function each.

Feast's public API does not offer everything parity does: resolving feature refs to
views without running a retrieval job, reading the SQLite online store's own
connection, refreshing the registry cache off the request path, writing the online
store's rows in bulk. Where no public call exists, parity calls Feast's private
one, and only here, so a Feast upgrade that renames or moves one breaks one
function, and ``tests/test_feast_private.py`` names it before anything else runs.

Each function's docstring names the Feast private name, why parity needs it (the
public API that is missing) and what breaks if it moves. Checked against Feast 0.67.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# -- feature refs (features/training_set.py) -----------------------------------------


def get_features(registry: Any, project: str, features: Any) -> list[str]:
    """``feast.utils._get_features(registry, project, features, allow_cache=True)``.

    Why: the feature refs a service or ref list stands for, resolved from the cached
    registry. Feast's public path to them is ``get_historical_features``, which also
    runs the join parity does itself in DuckDB.
    If it moves: no training set can be built (``parity build`` fails at its plan).
    """
    from feast import utils

    return list(utils._get_features(registry, project, features, allow_cache=True))


def get_feature_views_to_use(registry: Any, project: str, features: Any) -> tuple[Any, Any]:
    """``feast.utils._get_feature_views_to_use(registry, project, features)``.

    Why: the feature views and on-demand views behind the refs, with a service's
    projections (aliases, selected features) applied; no public call applies them.
    If it moves: as :func:`get_features`.
    """
    from feast import utils

    return utils._get_feature_views_to_use(registry, project, features)  # type: ignore[no-any-return]


def group_feature_refs(refs: list[str], views: Any, on_demand_views: Any) -> tuple[Any, Any]:
    """``feast.utils._group_feature_refs(refs, all_feature_views, all_on_demand_views)``.

    Why: which features of which view each ref selects, as Feast's own retrieval
    groups them (including the inputs on-demand views need); not public.
    If it moves: as :func:`get_features`.
    """
    from feast import utils

    return utils._group_feature_refs(refs, views, on_demand_views)  # type: ignore[no-any-return]


def validate_feature_refs(refs: list[str], full_feature_names: bool) -> None:
    """``feast.utils._validate_feature_refs(refs, full_feature_names)``.

    Why: Feast's own refusal of colliding feature names, so parity refuses exactly
    what ``get_historical_features`` refuses; not public.
    If it moves: as :func:`get_features`.
    """
    from feast import utils

    utils._validate_feature_refs(refs, full_feature_names)


# -- the online store (features/online.py) -------------------------------------------


def online_store(store: Any) -> Any:
    """``FeatureStore._get_provider().online_store``.

    Why: the online store object the feature store reads through; ``FeatureStore``
    exposes no public accessor for its provider.
    If it moves: online reads can no longer bound a SQLite read's lock wait
    (``FeastReader.bound_reads``), so the server's feature budget is not kept.
    """
    return store._get_provider().online_store


def sqlite_connection(sqlite_online_store: Any, config: Any) -> Any:
    """``SqliteOnlineStore._get_conn(config)``.

    Why: the ``sqlite3`` connection Feast reads through, to set its busy timeout;
    Feast offers no setting for it (Python's 5 s default applies).
    If it moves: as :func:`online_store`.
    """
    return sqlite_online_store._get_conn(config)


def sqlite_db_path(config: Any) -> str:
    """``SqliteOnlineStore._get_db_path(config)`` (a static method).

    Why: the file the SQLite online store lives in, resolved as Feast resolves it
    (relative to the repository); no public call returns it.
    If it moves: ``parity materialize`` cannot open the SQLite store to write it.
    """
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    return str(SqliteOnlineStore._get_db_path(config))


# -- the Redis online store's layout (materialize/online_write.py) -------------------


def parse_redis_connection_string(
    connection_string: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``RedisOnlineStore._parse_connection_string(connection_string)`` (static).

    Why: the hosts and client options of Feast's ``connection_string``, parsed as
    Feast parses it, so parity's bulk writer connects where Feast reads; not public.
    If it moves: ``parity materialize`` cannot write a Redis store.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore

    return RedisOnlineStore._parse_connection_string(connection_string)  # type: ignore[no-any-return]


def redis_view_name(view: Any, config: Any) -> str:
    """``feast.infra.online_stores.redis._versioned_fv_name(view, config)``.

    Why: the name Feast's Redis store keys a view's fields and timestamp by; parity
    writes the same hash fields Feast reads, and no public call names them.
    If it moves: ``parity materialize`` cannot write a Redis store (and a changed
    layout would write rows Feast does not read; the Redis tests compare with Feast).
    """
    from feast.infra.online_stores.redis import _versioned_fv_name

    return str(_versioned_fv_name(view, config))


def redis_field_hash(key: str) -> bytes:
    """``feast.infra.online_stores.helpers._mmh3(key)``.

    Why: the murmur3 hash Feast's Redis store names each feature's hash field by;
    not public.
    If it moves: as :func:`redis_view_name`.
    """
    from feast.infra.online_stores.helpers import _mmh3

    return bytes(_mmh3(key))


# -- the registry cache (registry/cache.py) ------------------------------------------


def store_registry(store: Any) -> Any:
    """``FeatureStore._registry`` (``None`` when the store has none).

    Why: the registry object itself, to find the refresher parity installed on it;
    ``FeatureStore.registry`` is public but a property that may refresh it.
    If it moves: the registry health report says nothing and closing a store no
    longer silences the refresher's outage warnings.
    """
    return getattr(store, "_registry", None)


def registry_refresh_hook(registry: Any) -> Callable[[], None]:
    """``CachingRegistry._refresh_cached_registry_if_necessary`` (bound method).

    Why: the method every registry read calls to refresh an expired cache, which
    parity replaces (:func:`replace_registry_refresh_hook`) to refresh off the
    request path and keep the last snapshot through an outage; Feast has no hook.
    If it moves: the SQL registry refreshes on the request path again, and a
    registry outage costs every request a connection attempt.
    """
    hook: Callable[[], None] = registry._refresh_cached_registry_if_necessary
    return hook


def replace_registry_refresh_hook(registry: Any, hook: Callable[[], None]) -> None:
    """Set ``CachingRegistry._refresh_cached_registry_if_necessary`` on one registry.

    Why and what breaks: see :func:`registry_refresh_hook`.
    """
    registry._refresh_cached_registry_if_necessary = hook


# -- closing a store (features/repository.py) -----------------------------------------


def close_online_store(store: Any) -> None:
    """Close the connection ``store``'s online store holds, if it opened one:
    ``FeatureStore._provider``, ``PassthroughProvider._online_store``, then
    ``RedisOnlineStore._client`` or ``SqliteOnlineStore._conn`` (set back to ``None``,
    so a later read reconnects).

    Why: Feast has no close for a feature store or its online store; their
    connections otherwise linger until garbage collection.
    If it moves: nothing fails here; connections are left to the garbage collector
    (Python 3.13 then warns of each unclosed SQLite connection).
    """
    provider = getattr(store, "_provider", None)
    online: Any = getattr(provider, "_online_store", None)
    client = getattr(online, "_client", None)
    if client is not None:
        client.close()
        online._client = None
    connection = getattr(online, "_conn", None)
    if connection is not None:
        connection.close()
        online._conn = None
