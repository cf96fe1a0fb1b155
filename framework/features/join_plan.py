"""The join plan: which feature views, features and on-demand views a request names.

Resolves a feature service (or ``view:feature`` refs) against the registry as
Feast's own retrieval does (:mod:`framework.feast_private`), naming the unknown
view or feature when a ref is wrong, and describes what a model gets from it
(:class:`FeatureContract`). The join itself is :mod:`framework.features.training_set`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framework import feast_private
from framework.errors import ConfigError
from framework.features.fields import FeatureField
from framework.features.fingerprint import definitions_digest
from framework.features.view_sources import View


@dataclass
class JoinPlan:
    store: Any
    service_name: str | None
    refs: list[str]
    provider_refs: list[str]
    views: list[View]
    odfvs: list[Any]
    #: The Feast feature views behind ``views`` (same order), projections applied.
    feature_views: list[Any]
    features_arg: Any  # what Feast's get_historical_features takes
    #: Views over the same files, keys and timestamps share one ASOF join
    #: (the sample's 1h/24h/7d views all read one source): (scan view, members).
    groups: list[tuple[View, list[View]]] = field(default_factory=list)
    #: Per group: whether its source holds at most one row per join key (see
    #: :func:`_one_row_per_key`).
    one_row_per_key: list[bool] = field(default_factory=list)


def open_repo(repo: Any) -> Any:
    from feast import FeatureStore

    from framework.features.repository import load_store

    if isinstance(repo, FeatureStore):
        return repo
    if isinstance(repo, str | os.PathLike):
        return load_store(Path(repo))
    raise ConfigError(
        "The 'repo' parameter must be a repository path or a feast.FeatureStore. "
        f"Got {type(repo).__name__}."
    )


def join_plan(
    store: Any, features: str | Sequence[str] | Any, full_feature_names: bool
) -> JoinPlan:
    from feast import FeatureService

    service_name: str | None = None
    if isinstance(features, str):
        try:
            features = store.get_feature_service(features)
        except Exception as exc:
            known = sorted(s.name for s in store.list_feature_services())
            raise ConfigError(
                f"Unknown feature service {features!r}; the registry has: "
                f"{', '.join(known) or 'none (run parity apply)'}."
            ) from exc
    if isinstance(features, FeatureService):
        service_name = features.name
    else:
        features = list(features)
        if not features:
            raise ConfigError("The 'features' parameter is empty: name a feature service or refs.")
        _check_refs(store, features)
    try:
        refs = feast_private.get_features(store.registry, store.project, features)
        all_fvs, all_odfvs = feast_private.get_feature_views_to_use(
            store.registry, store.project, features
        )
        fvs, odfvs = feast_private.group_feature_refs(refs, all_fvs, all_odfvs)
        feast_private.validate_feature_refs(refs, full_feature_names)
    except Exception as exc:
        raise ConfigError(f"Cannot resolve the features: {' '.join(str(exc).split())}") from exc

    provider_refs = list(refs)
    for view, feats in fvs:
        # Feast groups a view's features in a set: the inputs an on-demand view adds
        # would come in a different order in every process. The view's schema order.
        declared = [f.name for f in view.features]
        for feat in sorted(
            feats, key=lambda f: (f not in declared, declared.index(f) if f in declared else 0, f)
        ):
            ref = f"{view.projection.name_to_use()}:{feat}"
            if ref not in provider_refs:
                provider_refs.append(ref)

    views = []
    for view, _ in fvs:
        prefix = view.projection.name_to_use()
        base = view.projection.name_alias or view.name
        names = [r.split(":", 1)[1] for r in provider_refs if r.startswith(f"{prefix}:")]
        source = view.batch_source
        mapping = dict(source.field_mapping or {})
        views.append(
            View(
                name=view.name,
                projection_name=prefix,
                join_keys={
                    # A join-key map may rename some keys and leave the others.
                    mapping.get(e.name, e.name): (view.projection.join_key_map or {}).get(
                        e.name, e.name
                    )
                    for e in view.entity_columns
                },
                features=names,
                output=[f"{base}__{n}" if full_feature_names else n for n in names],
                timestamp_field=source.timestamp_field,
                created_field=source.created_timestamp_column or None,
                ttl=view.ttl or None,
                source=source,
            )
        )
    import copy

    odfv_list = copy.deepcopy([v for v, _ in odfvs])
    for odfv in odfv_list:
        odfv.write_to_online_store = False
    return JoinPlan(
        store=store,
        service_name=service_name,
        refs=list(refs),
        provider_refs=provider_refs,
        views=views,
        odfvs=odfv_list,
        feature_views=[view for view, _ in fvs],
        features_arg=features,
    )


def _check_refs(store: Any, refs: Sequence[str]) -> None:
    """Name the unknown view or feature instead of Feast's generic error."""
    views = {v.name: v for v in store.list_feature_views()}
    views.update({v.name: v for v in store.list_on_demand_feature_views()})
    for ref in refs:
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise ConfigError(f"Feature reference {ref!r} must have the form 'view:feature'.")
        view_name, feature = ref.split(":")
        view = views.get(view_name)
        if view is None:
            raise ConfigError(
                f"Unknown feature view {view_name!r} in {ref!r}; known views: "
                f"{', '.join(sorted(views)) or 'none (run parity apply)'}."
            )
        if feature not in {f.name for f in view.features}:
            raise ConfigError(
                f"Feature view {view_name!r} has no feature {feature!r}; it has: "
                f"{', '.join(f.name for f in view.features)}."
            )


@dataclass(frozen=True)
class FeatureContract:
    """What a feature service gives a model: its features (output names, Feast types,
    views) in training-set column order, the entity join keys and request-data fields
    the serving path needs, and the digest of the definitions behind them."""

    feature_service: str | None
    fields: list[FeatureField]
    join_keys: list[str]
    request_data: dict[str, str]
    definitions_digest: str
    #: Join key -> Feast value type name (``INT64``, ``STRING``, ``BYTES``, ...).
    join_key_types: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_contract(repo: Any, features: str | Sequence[str] | Any) -> FeatureContract:
    """The :class:`FeatureContract` of a feature service (or refs) in the current registry."""
    store = open_repo(repo)
    plan = join_plan(store, features, False)
    dtypes: dict[str, tuple[str, str]] = {}
    join_keys: list[str] = []
    key_types: dict[str, str] = {}
    for v, projected in zip(plan.views, plan.feature_views, strict=True):
        fv = store.get_feature_view(v.name)
        for f in fv.features:
            dtypes[f"{v.projection_name}:{f.name}"] = (str(f.dtype), v.name)
        key_map = projected.projection.join_key_map or {}
        for column in projected.entity_columns:
            key = key_map.get(column.name, column.name)
            if key not in join_keys:
                join_keys.append(key)
                key_types[key] = column.dtype.to_value_type().name
    request_data: dict[str, str] = {}
    for odfv in plan.odfvs:
        for f in odfv.features:
            dtypes[f"{odfv.projection.name_to_use()}:{f.name}"] = (str(f.dtype), odfv.name)
        for name, value_type in odfv.get_request_data_schema().items():
            request_data[name] = value_type.name
    fields = [
        FeatureField(name=ref.split(":", 1)[1], dtype=dtypes[ref][0], view=dtypes[ref][1])
        for ref in plan.refs
    ]
    digest = definitions_digest(
        [store.get_feature_view(v.name) for v in plan.views], plan.odfvs, plan.refs
    )
    return FeatureContract(
        feature_service=plan.service_name,
        fields=fields,
        join_keys=join_keys,
        request_data=request_data,
        definitions_digest=digest,
        join_key_types=key_types,
    )
