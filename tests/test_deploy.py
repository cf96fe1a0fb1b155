"""The Kubernetes manifests under deploy/kubernetes/: valid against the Kubernetes API's
own schemas (kubernetes-validate, strict: no unknown field), consistent with each other,
and every container runs a parity command the real parser accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from framework.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
#: The oldest Kubernetes the manifests are for (gRPC probes are GA from 1.27), and the
#: newest whose schemas kubernetes-validate ships.
VERSIONS = ("1.29.0", "latest")


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in MANIFESTS:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _documents() if d["kind"] == kind]


def _pod_specs() -> list[dict[str, Any]]:
    specs = [d["spec"]["template"]["spec"] for d in _by_kind("Deployment")]
    specs += [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in _by_kind("CronJob")]
    return specs


def test_there_are_the_manifests_the_deployment_needs() -> None:
    kinds = sorted(d["kind"] for d in _documents())
    assert kinds == sorted(["Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "PersistentVolumeClaim", "CronJob",
                            "CronJob"])  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    for doc in _documents():
        kubernetes_validate.validate(doc, version, strict=True)


def test_an_invalid_manifest_is_refused() -> None:
    """The check can fail: a probe with a misspelt field, a port as a word."""
    import kubernetes_validate

    deployment = _by_kind("Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**container, "readinessProbe": {"grpc": {"prot": 50051}}}
    doc = {**deployment, "spec": {**deployment["spec"], "template": {
        **deployment["spec"]["template"], "spec": {
            **deployment["spec"]["template"]["spec"], "containers": [broken]}}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.29.0", strict=True)


def test_every_container_runs_a_parity_command_the_parser_accepts() -> None:
    parser = build_parser()
    commands = []
    for spec in _pod_specs():
        for container in spec["containers"]:
            assert container["command"] == ["parity"]
            args = parser.parse_args(container["args"])
            assert str(args.repo) == "/repo" and str(args.profile.value) == "production"
            commands.append(container["args"][0])
    assert sorted(commands) == ["materialize", "retrain", "serve"]
    jobs = {d["metadata"]["name"]: d for d in _by_kind("CronJob")}
    materialize = jobs["parity-materialize"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "--incremental" in materialize["containers"][0]["args"]


def test_the_serving_probes_ask_grpc_health_on_the_served_port() -> None:
    deployment = _by_kind("Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "http": args.http_port, "metrics": args.metrics_port}
    assert args.host == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": args.port}, probe
    service = _by_kind("Service")[0]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    hpa = _by_kind("HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # a replica down never takes the service down


def test_every_pod_mounts_the_one_shared_state_volume() -> None:
    claim = _by_kind("PersistentVolumeClaim")[0]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for spec in _pod_specs():
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["state"] == "/repo/.parity"
