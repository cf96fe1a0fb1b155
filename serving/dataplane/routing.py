"""From a score to a decision: confidence routing, input checks and rules.

1. **Confidence** picks the starting decision: >= ``accept`` ACCEPT, >=
   ``review_below`` VALIDATE, else REVIEW (the version's serving thresholds).
2. **Input checks** against the version's reference statistics: a number
   further outside the training range than ``range_margin`` of its span, a
   category never seen in training, a feature without a value that was (almost)
   never missing in training. Each is a reason and caps the decision (policy
   per kind in the spec: VALIDATE, REVIEW or none) — never silently passed.
3. **Rules** registered with the model run on VALIDATE predictions: a rule
   whose pandas expression holds over the row's features and request data
   sends the prediction to its decision (REVIEW by default). Evaluated without
   pandas where the expression allows (:mod:`serving.dataplane.rule_eval`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from framework.models.manifest import Manifest
from serving.dataplane.rule_eval import NotCompiled, compile_rule

ACCEPT, VALIDATE, REVIEW, FALLBACK = "ACCEPT", "VALIDATE", "REVIEW", "FALLBACK"
_ORDER = {ACCEPT: 0, VALIDATE: 1, REVIEW: 2}
_MISSING = ("NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE")


@dataclass
class Issue:
    kind: str  # out_of_range | unseen_category | unexpected_missing
    feature: str
    detail: str


@dataclass
class Router:
    """The routing policy of one model version, from its manifest."""

    serving: dict[str, Any]
    reference: dict[str, Any]
    rules: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Each rule without pandas where its expression allows (serving.dataplane.rule_eval).
        self._compiled = [compile_rule(rule["when"]) for rule in self.rules]

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Router:
        # Looked up per request: a plain mapping, built once per version.
        serving = manifest.serving.model_dump(mode="json")
        return cls(serving, manifest.reference.features, list(serving["rules"]))

    def by_confidence(self, confidence: float) -> tuple[str, str]:
        accept, review = self.serving["accept"], self.serving["review_below"]
        if confidence >= accept:
            return ACCEPT, f"confidence {confidence:.3f} >= accept {accept}"
        if confidence >= review:
            return VALIDATE, f"confidence {confidence:.3f} between {review} and {accept}"
        return REVIEW, f"confidence {confidence:.3f} < review {review}"

    def issues(self, values: dict[str, Any], status: dict[str, str]) -> list[Issue]:
        """Input checks of one row against the training distribution."""
        found = []
        margin = self.serving["range_margin"]
        for name, profile in self.reference.items():
            value = values.get(name)
            if value is None or (isinstance(value, float) and value != value):
                if status.get(name) in _MISSING and profile.get("null_rate", 1.0) < 0.01:
                    found.append(
                        Issue("unexpected_missing", name, f"{name} has no value "
                              f"({status[name]}) but was missing in under 1% of training")
                    )  # fmt: skip
                continue
            if profile["kind"] == "numerical" and profile.get("min") is not None:
                low, high = profile["min"], profile["max"]
                slack = margin * ((high - low) or abs(high) or 1.0)
                if value < low - slack or value > high + slack:
                    found.append(
                        Issue("out_of_range", name, f"{name}={value:g} is outside the "
                              f"training range [{low:g}, {high:g}]")
                    )  # fmt: skip
            elif profile["kind"] == "categorical":
                known = profile.get("categories", {})
                if value not in known and not profile.get("other_count"):
                    found.append(
                        Issue("unseen_category", name, f"{name}={value!r} never appeared "
                              "in training")
                    )  # fmt: skip
        return found

    def cap(self, decision: str, issues: list[Issue]) -> str:
        for issue in issues:
            limit = self.serving[f"cap_on_{issue.kind}"]
            if limit in _ORDER and _ORDER[limit] > _ORDER[decision]:
                decision = limit
        return decision

    def apply_rules(self, row: dict[str, Any]) -> tuple[str | None, list[str]]:
        """The first rule that holds on a VALIDATE row: its decision and the reason."""
        if not self.rules:
            return None, []
        frame: pd.DataFrame | None = None
        for rule, compiled in zip(self.rules, self._compiled, strict=True):
            try:
                if compiled is None:
                    raise NotCompiled(rule["when"])
                held = compiled(row)
            except NotCompiled:
                try:
                    if frame is None:
                        frame = pd.DataFrame(
                            [{k: (float("nan") if v is None else v) for k, v in row.items()}]
                        )
                    result: Any = frame.eval(rule["when"], engine="python")
                    held = bool(np.asarray(result).reshape(-1)[0])
                except Exception as exc:  # a rule that cannot run must not pass silently
                    return REVIEW, [f"rule {rule['name']} could not run ({exc}); sent to review"]
            if held:
                return rule["decision"], [f"rule {rule['name']} holds: {rule['when']}"]
        return None, [f"rules passed: {', '.join(r['name'] for r in self.rules)}"]

    def decide(
        self, confidence: float, values: dict[str, Any], status: dict[str, str]
    ) -> tuple[str, list[str], list[Issue]]:
        decision, why = self.by_confidence(confidence)
        reasons = [why]
        issues = self.issues(values, status)
        reasons += [i.detail for i in issues]
        decision = self.cap(decision, issues)
        if decision == VALIDATE:
            ruled, rule_reasons = self.apply_rules(values)
            reasons += rule_reasons
            if ruled is not None:
                decision = ruled
        return decision, reasons, issues
