"""The model manifest as a type: read losslessly, refused by name when it is not one."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from framework.errors import DataError
from framework.models.manifest import Manifest
from framework.models.spec import Task
from framework.registry.model_registry import ModelRef, ModelRegistry
from tests.support.workspaces import Trained


def _registry(trained: Trained) -> tuple[ModelRegistry, ModelRef]:
    return ModelRegistry(trained.registry_root), ModelRef("fraud_model", trained.version)


def test_a_registered_manifest_reads_back_exactly(trained: Trained) -> None:
    registry, ref = _registry(trained)
    on_disk = json.loads((registry.version_dir(ref) / "manifest.json").read_text())
    manifest = Manifest.read(registry, ref)
    assert manifest.as_dict() == on_disk  # every key, nested values included
    assert manifest.ref == ref and manifest.task is Task.CLASSIFICATION
    assert [f.name for f in manifest.fields] == [f["name"] for f in on_disk["features"]]
    assert manifest.serving.threshold == on_disk["serving"]["threshold"]
    assert manifest.artifact.sha256 == on_disk["artifact"]["sha256"]


def test_unknown_keys_survive_a_round_trip(trained: Trained) -> None:
    registry, ref = _registry(trained)
    raw = {**registry.manifest(ref), "added_by_a_newer_parity": {"x": 1}}
    assert Manifest.of(raw, ref).as_dict()["added_by_a_newer_parity"] == {"x": 1}


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("features", 0, "dtype"), None, "features.0.dtype"),
        (("serving", "threshold"), 1.5, "serving.threshold"),
        (("task",), "ranking", "task"),
        (("artifact",), None, "artifact"),
    ],
)
def test_a_broken_manifest_is_refused_naming_the_field(
    trained: Trained, path: tuple[str | int, ...], value: object, named: str
) -> None:
    registry, ref = _registry(trained)
    raw = copy.deepcopy(registry.manifest(ref))
    at: dict = raw  # type: ignore[type-arg]
    for step in path[:-1]:
        at = at[step]  # type: ignore[index]
    at[path[-1]] = value  # type: ignore[index]
    with pytest.raises(DataError, match=rf"fraud_model:{trained.version} is not valid: {named}:"):
        Manifest.of(raw, ref)


def test_the_manifest_file_is_what_training_wrote(trained: Trained, tmp_path: Path) -> None:
    registry, ref = _registry(trained)
    manifest = Manifest.read(registry, ref)
    copy_registry = ModelRegistry(tmp_path / "models")
    files = {
        p.name: p.read_bytes()
        for p in registry.version_dir(ref).iterdir()
        if p.name != "manifest.json"
    }
    again = copy_registry.register("fraud_model", files, manifest.record())
    assert Manifest.read(copy_registry, again).as_dict() == {**manifest.as_dict(), "version": 1}
