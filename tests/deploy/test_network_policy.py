"""The namespace's NetworkPolicies and the root credential, checked statically.

Rendered with the same small kustomize as the other manifests and validated against the
Kubernetes schemas there (``test_every_object_validates_against_its_schema``). Here: what the
system needs still passes (services to NATS and PostgreSQL, routes between NATS pods, the
kubelet to every probe port), what it does not is refused by default, and no pod gets the
``sys`` identity, which can purge every stream of the fleet's account.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .test_kubernetes_manifests import (
    DEPLOY,
    K8S,
    by_kind,
    containers,
    env_of,
    render,
    workloads,
)

Doc = dict[str, Any]
NATS_POD = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/component": "nats"}
DB_POD = {"cnpg.io/cluster": "sriov-db"}
NODE = "10.1.2.3"  # a node's address (hostNetwork pods, the kubelet) in NODES


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    ok = selector.get("matchLabels", {}).items() <= labels.items()
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        ok = ok and labels.get(e["key"]) in e["values"]
    return ok


def allowed(policies: list[Doc], target: dict[str, str], port: int, source: Doc) -> bool:
    """Whether ``source`` ({"pod": labels, "namespace": name} or {"ip": address}) may reach
    ``port`` of a pod labelled ``target`` in namespace sriov."""
    applying = [p for p in policies if selects(p["spec"]["podSelector"], target)]
    assert applying, f"no policy selects {target}: the default-deny one selects every pod"
    for p in applying:
        for rule in p["spec"].get("ingress", []):
            if port not in {x["port"] for x in rule.get("ports", [])}:
                continue
            for peer in rule.get("from", []):
                if "ipBlock" in peer and "ip" in source:
                    net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                    if ipaddress.ip_address(source["ip"]) in net:
                        return True
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    if source.get("namespace") == "sriov" and selects(
                        peer["podSelector"], source["pod"]
                    ):
                        return True
                if "namespaceSelector" in peer and "podSelector" not in peer:
                    ns = peer["namespaceSelector"]["matchLabels"]
                    if ns == {"kubernetes.io/metadata.name": source.get("namespace")}:
                        return True
    return False


def pod_labels(w: Doc) -> dict[str, str]:
    labels: dict[str, str] = w["spec"]["template"]["metadata"]["labels"]
    return labels


def test_default_deny_and_the_paths_the_system_uses() -> None:
    docs = render(K8S / "base")
    policies = by_kind(docs, "NetworkPolicy")
    assert {"default-deny-ingress", "nats", "sriov-db"} <= {p["metadata"]["name"] for p in policies}
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    svc = {w["metadata"]["name"]: pod_labels(w) for w in workloads(docs)
           if w["metadata"]["namespace"] == "sriov"}  # fmt: skip
    for name in ("sriov-inventory", "sriov-scheduler"):
        me = {"pod": svc[name], "namespace": "sriov"}
        assert allowed(policies, NATS_POD, 4222, me), f"{name} cannot reach NATS"
        assert allowed(policies, DB_POD, 5432, me), f"{name} cannot reach PostgreSQL"
        assert not allowed(policies, NATS_POD, 6222, me), f"{name} reaches the NATS routes"
    node = {"ip": NODE}
    assert allowed(policies, NATS_POD, 4222, node), "host agents (hostNetwork) cannot reach NATS"
    assert allowed(policies, NATS_POD, 6222, {"pod": NATS_POD, "namespace": "sriov"})
    assert not allowed(policies, NATS_POD, 6222, node), "routes open to the nodes"
    assert not allowed(policies, DB_POD, 5432, node), "PostgreSQL open to the nodes"
    collector = {"pod": svc["otel-collector"], "namespace": "sriov"}
    assert not allowed(policies, DB_POD, 5432, collector)
    assert not allowed(policies, NATS_POD, 4222, collector)
    assert allowed(policies, DB_POD, 8000, {"namespace": "cnpg-system"})  # the operator
    assert allowed(policies, DB_POD, 5432, {"pod": DB_POD, "namespace": "sriov"})  # replication

    for w in workloads(docs):
        if w["metadata"]["namespace"] != "sriov":
            continue
        for c in containers(w):
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is None:
                    continue
                number = ports.get(port, port)
                assert allowed(policies, pod_labels(w), number, node), (
                    f"{w['metadata']['name']}: the kubelet cannot reach its {probe} on {number}"
                )
            if "OTEL_EXPORTER_PROMETHEUS_PORT" in env_of(c):
                metrics = int(env_of(c)["OTEL_EXPORTER_PROMETHEUS_PORT"])
                assert allowed(policies, pod_labels(w), metrics, {"namespace": "monitoring"})


def test_policies_select_pods_that_exist() -> None:
    docs = render(K8S / "base")
    ours = [pod_labels(w) for w in workloads(docs) if w["metadata"]["namespace"] == "sriov"]
    installed_separately = [NATS_POD, DB_POD]  # the Helm release and CloudNativePG
    for p in by_kind(docs, "NetworkPolicy"):
        sel = p["spec"]["podSelector"]
        if sel:
            assert any(selects(sel, labels) for labels in ours + installed_separately), (
                f"NetworkPolicy {p['metadata']['name']} selects no pod"
            )


def test_chart_pods_carry_the_labels_the_policies_select() -> None:
    """The NATS chart labels its pods name=<chart name>, component=nats; fullnameOverride does
    not change the name label, so the policy's selector matches the release's pods."""
    import yaml

    v = yaml.safe_load((DEPLOY / "helm/nats-values.yaml").read_text())
    assert "nameOverride" not in v  # would change app.kubernetes.io/name
    assert v["fullnameOverride"] == "nats"


SECRET_LINE = re.compile(r"create secret generic (\S+) (--from-[a-z-]+=\S+(?: --from-\S+)*)")


def test_the_system_identity_is_mounted_by_no_pod() -> None:
    """``admin/sys.env`` is a root credential: no Secret made from it, none referenced."""
    guide = (DEPLOY / "OPERATIONS.md").read_text()
    sources = {m.group(1): m.group(2) for m in SECRET_LINE.finditer(guide)}
    assert sources, "OPERATIONS.md creates no Secret: the pattern no longer matches it"
    for name, src in sources.items():
        assert "admin/" not in src, f"Secret {name} is made from an operator's file: {src}"
    for kustomization in (K8S / "base", K8S / "overlays/production"):
        for w in workloads(render(kustomization)):
            pod = w["spec"]["template"]["spec"]
            refs = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
            for c in containers(w):
                refs |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
                refs |= {v["secretKeyRef"]["name"] for v in env_of(c).values()
                         if isinstance(v, dict) and "secretKeyRef" in v}  # fmt: skip
                assert "sys.env" not in " ".join(c.get("args", [])), "the root credential"
            for ref in refs:
                assert "sys" not in ref.split("-"), f"{w['metadata']['name']} mounts {ref}"
                assert "admin/" not in sources.get(ref, ""), f"{ref} holds an operator's key"
    assert "root credential" in guide and "admin/sys.env" in guide
