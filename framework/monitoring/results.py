"""What :func:`framework.monitoring.summary.monitor_summary` returns, as types.

The summary crosses modules (the command line, the report, retraining, the
demo): these dataclasses let the type checker follow its fields. ``to_dict``
gives the JSON shape ``parity monitor --json`` prints and the report renders,
and is called only there, at the output boundary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from framework.logs.outcome_join import MatchCounts
from framework.models.estimated import EstimatedPerformance
from framework.monitoring.freshness import FeatureFreshness
from framework.monitoring.live_quality import LiveQuality
from framework.monitoring.log_drift import VersionDrift
from framework.monitoring.operations import Cost, Operations, TimelinePoint
from framework.monitoring.skew import SkewReport
from framework.monitoring.thresholds import Thresholds


@dataclass
class Window:
    """The monitored window as asked (``since``, ``until``, the request id prefix) and as
    found (first and last request, rows, requests); ``bucket_seconds``: the timeline's."""

    since: str | None
    until: str | None
    request_id_prefix: str | None
    first: str | None
    last: str | None
    rows: int
    requests: int
    bucket_seconds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.bucket_seconds is None:
            del out["bucket_seconds"]
        return out


@dataclass
class VersionSummary:
    """One logged version: operations, drift against its reference, cost, live quality,
    and (a classifier's) performance estimated from its scores without labels."""

    version: str
    known: bool  # whether the registry holds its manifest
    operations: Operations
    drift: VersionDrift | None = None
    cost: Cost | None = None
    quality: LiveQuality | None = None
    estimated: EstimatedPerformance | None = None
    #: Why there is no estimate at all (a regression version), said in the output.
    estimated_reason: str | None = None
    #: Served vs training feature ages (None: the version records none).
    freshness: list[FeatureFreshness] | None = None

    def to_dict(self) -> dict[str, Any]:
        estimated = (
            self.estimated.to_dict()
            if self.estimated is not None
            else {"available": False, "reason": self.estimated_reason}
            if self.estimated_reason
            else None
        )
        return {
            "version": self.version,
            "known": self.known,
            **asdict(self.operations),
            "drift": self.drift.to_dict() if self.drift is not None else None,
            "cost": asdict(self.cost) if self.cost is not None else None,
            "quality": self.quality.to_dict() if self.quality is not None else None,
            "estimated": estimated,
            "freshness": None if self.freshness is None else [f.to_dict() for f in self.freshness],
        }


@dataclass
class Alert:
    name: str
    version: str  # a version, several joined by commas, or "all"
    severity: str  # warning | critical
    message: str
    value: float | None
    threshold: float


@dataclass
class MonitorSummary:
    """One model's monitored window: ``status`` is ``alert``, ``ok`` or
    ``insufficient_data``; ``errors`` the failed requests
    (:func:`framework.logs.failed_requests.error_summary`); ``feedback`` the outcome
    join's counts (when outcomes were joined); ``skew`` a skew check's (when run)."""

    model: str
    generated_at: str
    window: Window
    thresholds: Thresholds
    errors: dict[str, Any]
    versions: list[VersionSummary] = field(default_factory=list)
    timeline: list[TimelinePoint] = field(default_factory=list)
    feedback: MatchCounts | None = None
    alerts: list[Alert] = field(default_factory=list)
    status: str = "ok"
    skew: SkewReport | None = None

    def version(self, version: str) -> VersionSummary | None:
        return next((v for v in self.versions if v.version == version), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "generated_at": self.generated_at,
            "window": self.window.to_dict(),
            "thresholds": self.thresholds.to_dict(),
            "errors": self.errors,
            "versions": [v.to_dict() for v in self.versions],
            "timeline": [asdict(t) for t in self.timeline],
        }
        if self.feedback is not None:
            out["feedback"] = dict(self.feedback)
        out["alerts"] = [asdict(a) for a in self.alerts]
        out["status"] = self.status
        if self.skew is not None:
            out["skew"] = self.skew.to_dict()
        return out
