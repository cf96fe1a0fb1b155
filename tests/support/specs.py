"""The shipped model spec, as a file and as a dict to vary."""

from __future__ import annotations

import tomllib
from typing import Any

from tests.support.workspaces import ROOT

SPEC = ROOT / "feature_repo" / "models" / "fraud_model.toml"


def spec_dict(**changes: Any) -> dict[str, Any]:
    """The shipped spec as a dict, with top-level sections updated."""
    raw = tomllib.loads(SPEC.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw
