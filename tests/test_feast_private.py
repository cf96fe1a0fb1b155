"""Every Feast private name parity calls still exists, and takes the call parity makes.

:mod:`framework.feast_private` is the one module that touches Feast's private API.
This checks each private name against the installed Feast with
:func:`inspect.signature`, binding the arguments parity passes, so a Feast upgrade
that renames, moves or re-shapes one fails here with a message naming it, rather
than deep inside a materialisation or a request.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from framework import feast_private

# (the function of feast_private, Feast's module, the private name in it, the
# positional arguments parity passes (self first for methods), its keyword arguments)
CALLS: list[tuple[str, str, str, tuple[str, ...], tuple[str, ...]]] = [
    (
        "get_features",
        "feast.utils",
        "_get_features",
        ("registry", "project", "features"),
        ("allow_cache",),
    ),
    (
        "get_feature_views_to_use",
        "feast.utils",
        "_get_feature_views_to_use",
        ("registry", "project", "features"),
        (),
    ),
    (
        "group_feature_refs",
        "feast.utils",
        "_group_feature_refs",
        ("refs", "views", "on_demand_views"),
        (),
    ),
    (
        "validate_feature_refs",
        "feast.utils",
        "_validate_feature_refs",
        ("refs", "full_feature_names"),
        (),
    ),
    ("online_store", "feast.feature_store", "FeatureStore._get_provider", ("self",), ()),
    (
        "sqlite_connection",
        "feast.infra.online_stores.sqlite",
        "SqliteOnlineStore._get_conn",
        ("self", "config"),
        (),
    ),
    (
        "sqlite_db_path",
        "feast.infra.online_stores.sqlite",
        "SqliteOnlineStore._get_db_path",
        ("config",),
        (),
    ),
    (
        "parse_redis_connection_string",
        "feast.infra.online_stores.redis",
        "RedisOnlineStore._parse_connection_string",
        ("connection_string",),
        (),
    ),
    (
        "redis_view_name",
        "feast.infra.online_stores.redis",
        "_versioned_fv_name",
        ("view", "config"),
        (),
    ),
    ("redis_field_hash", "feast.infra.online_stores.helpers", "_mmh3", ("key",), ()),
    (
        "registry_refresh_hook",
        "feast.infra.registry.caching_registry",
        "CachingRegistry._refresh_cached_registry_if_necessary",
        ("self",),
        (),
    ),
    (
        "replace_registry_refresh_hook",
        "feast.infra.registry.caching_registry",
        "CachingRegistry._refresh_cached_registry_if_necessary",
        ("self",),
        (),
    ),
]
# Private attributes parity reads from instances: (function, Feast module, class, attribute).
ATTRIBUTES = [
    ("store_registry", "feast.feature_store", "FeatureStore", "_registry"),
    ("close_online_store", "feast.feature_store", "FeatureStore", "_provider"),
    (
        "close_online_store",
        "feast.infra.passthrough_provider",
        "PassthroughProvider",
        "_online_store",
    ),
    ("close_online_store", "feast.infra.online_stores.redis", "RedisOnlineStore", "_client"),
    ("close_online_store", "feast.infra.online_stores.sqlite", "SqliteOnlineStore", "_conn"),
]


def _lookup(module: str, dotted: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in dotted.split("."):
        found = inspect.getattr_static(found, part)
        if isinstance(found, staticmethod):
            found = found.__func__
    return found


@pytest.mark.parametrize(("function", "module", "name", "args", "kwargs"), CALLS)
def test_each_private_name_parity_calls_still_takes_the_call_parity_makes(
    function: str, module: str, name: str, args: tuple[str, ...], kwargs: tuple[str, ...]
) -> None:
    where = f"feast_private.{function} calls Feast's {module}.{name}"
    try:
        target = _lookup(module, name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{where}, which this Feast no longer has ({exc})")
    assert callable(target), f"{where}, which is no longer callable"
    try:
        inspect.signature(target).bind(*args, **{k: k for k in kwargs})
    except TypeError as exc:
        pytest.fail(f"{where}{inspect.signature(target)}, which refuses parity's call: {exc}")


@pytest.mark.parametrize(("function", "module", "cls", "attribute"), ATTRIBUTES)
def test_each_private_attribute_parity_reads_is_still_set(
    function: str, module: str, cls: str, attribute: str
) -> None:
    owner = _lookup(module, cls)
    declared = attribute in getattr(owner, "__annotations__", {}) or attribute in vars(owner)
    init = "" if declared else inspect.getsource(_lookup(module, f"{cls}.__init__"))
    assert declared or f"self.{attribute} =" in init or f"self.{attribute}:" in init, (
        f"feast_private.{function} reads {module}.{cls}.{attribute}, "
        "which this Feast neither declares nor sets in its constructor"
    )


def test_every_function_of_feast_private_is_checked_here() -> None:
    functions = {
        name
        for name, value in vars(feast_private).items()
        if inspect.isfunction(value) and value.__module__ == feast_private.__name__
    }
    checked = {c[0] for c in CALLS} | {a[0] for a in ATTRIBUTES}
    assert functions == checked
