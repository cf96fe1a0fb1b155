"""Do a model version's pinned definitions still match Feast? Answered here, once.

A version pins the features it was trained on (name, view, Feast type) and the digest
of the definitions behind its feature service. Promotion's gate, batch scoring and the
server's model load all ask :func:`check_pinned`; each decides what a mismatch means
for it (a failed check, a refused job, ``FAILED_PRECONDITION``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from framework.errors import ParityError
from framework.features.fields import FeatureField
from framework.features.join_plan import feature_contract


@dataclass(frozen=True)
class PinnedCheck:
    """What differs between the pinned definitions and Feast's registry now."""

    service: str
    problems: tuple[str, ...]
    features_now: int

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def detail(self) -> str:
        if self.problems:
            return "; ".join(self.problems)
        return f"{self.features_now} features of {self.service!r} match the registry"


def check_pinned(
    store: Any, service: str, pinned: Sequence[FeatureField], pinned_digest: str
) -> PinnedCheck:
    """Compare a version's pinned features
    and definitions digest with what ``store``'s registry resolves for ``service`` now.

    Every removed, retyped or added feature is named; a digest change with the same
    features (a source, a transformation, a TTL) is reported as such.
    """
    try:
        contract = feature_contract(store, service)
    except ParityError as exc:
        problem = f"feature service {service!r} no longer resolves: {exc}"
        return PinnedCheck(service, (problem,), 0)
    now = {(f.name, f.view): f.dtype for f in contract.fields}
    problems = []
    for f in pinned:
        dtype = now.get((f.name, f.view))
        if dtype is None:
            problems.append(f"{f.view}:{f.name} is no longer in feature service {service!r}")
        elif dtype != f.dtype:
            problems.append(f"{f.view}:{f.name} is now {dtype}, was {f.dtype}")
    names = {(f.name, f.view) for f in pinned}
    problems += [f"{v}:{n} was added to {service!r}" for n, v in now if (n, v) not in names]
    if not problems and contract.definitions_digest != pinned_digest:
        problems.append(
            f"the definitions behind {service!r} changed (digest "
            f"{pinned_digest[:12]} pinned, {contract.definitions_digest[:12]} now)"
        )
    return PinnedCheck(service, tuple(problems), len(now))
