"""Every Kubernetes manifest under deploy/kubernetes: rendered, schema-checked, cross-checked.

``kubectl kustomize`` is not installed everywhere the tests run, so the kustomizations are
rendered here (resources, components, configMapGenerator, strategic-merge patches, images,
replicas, labels: what ours use). Built-in kinds are validated against the Kubernetes JSON
schemas that ``kubernetes-validate`` bundles (strict: unknown fields fail); custom resources
against subset schemas in ``schemas/``. Then the facts the services rely on: command lines
the real argument parsers accept, environment variables the settings know, probes, ports,
selectors, Secrets the operations guide tells how to create. One file: the renderer and
the checks share the rendered documents (``test_network_policy`` imports its helpers).
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sriov.common import telemetry
from sriov.common.runtime import BusSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).parent / "schemas"
K8S_VERSION = "1.30"
BUILTIN_GROUPS = ("v1", "apps/v1", "policy/v1", "rbac.authorization.k8s.io/v1", "batch/v1",
                  "networking.k8s.io/v1")  # fmt: skip
KUSTOMIZATIONS = [K8S / "base", K8S / "overlays/production"]

Doc = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# A small kustomize
# ---------------------------------------------------------------------------------------------
def load_docs(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        assert isinstance(d, dict) and "kind" in d, f"{path}: a document without kind"
    return docs


def key(d: Doc) -> tuple[str, str, str]:
    meta = d.get("metadata") or {}
    return d["kind"], meta.get("namespace", ""), meta["name"]


MERGE_KEYS = {"volumeMounts": "mountPath"}


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge as kustomize does it for what we patch (lists of named items)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    mk = MERGE_KEYS.get(field, "name")
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and mk in x for x in base + patch)
    ):
        out_list = [dict(x) for x in base]
        for item in patch:
            match = next((i for i, x in enumerate(out_list) if x[mk] == item[mk]), None)
            if match is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[match] = merge(out_list[match], item, field)
        return out_list
    return copy.deepcopy(patch)


def containers(d: Doc) -> list[Doc]:
    spec = d.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def render(path: Path, accumulated: list[Doc] | None = None) -> list[Doc]:
    kfile = path / "kustomization.yaml"
    assert kfile.exists(), f"{path}: no kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    docs = list(accumulated or [])
    for res in k.get("resources", []):
        target = (path / res).resolve()
        assert target.exists(), f"{kfile}: resource {res} does not exist"
        docs += render(target) if target.is_dir() else load_docs(target)
    for comp in k.get("components", []):
        target = (path / comp).resolve()
        kind = yaml.safe_load((target / "kustomization.yaml").read_text())["kind"]
        assert kind == "Component", f"{kfile}: {comp} is not a Component"
        docs = render(target, docs)
    for gen in k.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            text = (path / f).read_text()
            if f.endswith(".json"):
                json.loads(text)
            data[Path(f).name] = text
        labels = gen.get("options", {}).get("labels", {})
        docs.append({
            "apiVersion": "v1", "kind": "ConfigMap", "data": data,
            "metadata": {"name": gen["name"], "namespace": gen.get("namespace", ""),
                         "labels": dict(labels)},
        })  # fmt: skip
    for p in k.get("patches", []):
        for patch in load_docs(path / p["path"]):
            idx = [i for i, d in enumerate(docs) if key(d) == key(patch)]
            assert idx, f"{kfile}: patch {p['path']} targets {key(patch)}, which is not rendered"
            docs[idx[0]] = merge(docs[idx[0]], patch)
    for img in k.get("images", []):
        hits = 0
        for d in docs:
            for c in containers(d):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"
                    hits += 1
        assert hits, f"{kfile}: image {img['name']} is used by no container"
    for rep in k.get("replicas", []):
        hit = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == rep["name"]
        ]
        assert hit, f"{kfile}: replicas for unknown Deployment {rep['name']}"
        hit[0]["spec"]["replicas"] = rep["count"]
    for lab in k.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    return docs


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    return render(request.param)


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    yield from (d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"))


def env_of(c: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def shell_command(c: Doc) -> list[str]:
    """The argv a container runs; for `sh -c "... && exec X args"`, that X args."""
    argv = [*c.get("command", []), *c.get("args", [])] or [c["image"]]
    if argv[:2] == ["/bin/sh", "-c"]:
        script = " ".join(argv[2:])
        argv = shlex.split(script.rsplit("exec ", 1)[1])
    return argv


# ---------------------------------------------------------------------------------------------
# Files and schemas
# ---------------------------------------------------------------------------------------------
def test_every_yaml_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        load_docs(f) if "kubernetes" in f.parts else yaml.safe_load(f.read_text())


def test_every_manifest_file_is_referenced_by_its_kustomization() -> None:
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        used = set(k.get("resources", [])) | {p["path"] for p in k.get("patches", [])}
        for f in kfile.parent.glob("*.yaml"):
            if f.name != "kustomization.yaml":
                assert f.name in used, f"{f} is in no kustomization: it would never be applied"


def test_objects_are_unique_and_namespaced(rendered: list[Doc]) -> None:
    keys = [key(d) for d in rendered]
    assert len(keys) == len(set(keys)), "an object is defined twice"
    namespaces = {d["metadata"]["name"] for d in by_kind(rendered, "Namespace")}
    for d in rendered:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") in namespaces, f"{key(d)}: namespace"
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sriov-control-plane"


def test_every_object_validates_against_its_schema(rendered: list[Doc]) -> None:
    for d in rendered:
        if d["apiVersion"] in BUILTIN_GROUPS:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            continue
        group = d["apiVersion"].replace("/", "_")
        schema_file = SCHEMAS / f"{group}_{d['kind']}.json"
        assert schema_file.exists(), f"{key(d)}: no schema for {d['apiVersion']} {d['kind']}"
        jsonschema.validate(d, json.loads(schema_file.read_text()))


def test_schema_check_catches_a_typo() -> None:
    """The validators are strict: a misspelt field is an error, not ignored."""
    dep = copy.deepcopy(find(render(K8S / "base"), "Deployment", "sriov-scheduler"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    cluster = copy.deepcopy(find(render(K8S / "base"), "Cluster", "sriov-db"))
    cluster["spec"]["instance"] = 3
    schema = json.loads((SCHEMAS / "postgresql.cnpg.io_v1_Cluster.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, schema)


# ---------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------
def test_workloads_select_their_pods_and_have_probes_and_limits(rendered: list[Doc]) -> None:
    for w in workloads(rendered):
        selector = w["spec"]["selector"]["matchLabels"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{key(w)}: selector misses its pods"
        for c in containers(w):
            where = f"{key(w)} container {c['name']}"
            assert c["image"].rsplit(":", 1)[-1] not in ("", "latest"), f"{where}: pin a tag"
            assert "livenessProbe" in c, f"{where}: no liveness probe"
            assert "readinessProbe" in c or w["kind"] == "DaemonSet", f"{where}: no readiness"
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str):
                    assert port in ports, f"{where}: {probe} names unknown port {port}"
                elif port is not None:
                    assert port in ports.values(), f"{where}: {probe} port {port} not declared"


def test_control_plane_pods_meet_the_restricted_pod_security_standard(
    rendered: list[Doc],
) -> None:
    for w in workloads(rendered):
        if w["metadata"]["namespace"] != "sriov":
            continue
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, key(w)
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", key(w)
        assert pod.get("automountServiceAccountToken") is False, key(w)
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (key(w), c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (key(w), c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (key(w), c["name"])


def test_host_agents_are_a_daemonset_like_the_guides_default_host(rendered: list[Doc]) -> None:
    from sriov.hostd.main import build_parser
    from sriov.offload.main import parser as offload_parser

    ds = find(rendered, "DaemonSet", "sriov-host")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"  # rollout restart works
    volumes = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    hostd, offload = (next(c for c in pod["containers"] if c["name"] == n) for n in
                      ("hostd", "offload"))  # fmt: skip
    assert hostd["securityContext"]["privileged"] is True
    mounts = {m["mountPath"]: volumes[m["name"]] for m in hostd["volumeMounts"]}
    assert mounts["/sys"] == "/sys" and mounts["/etc/sriov"] == "/etc/sriov"
    assert mounts["/etc/machine-id"] == "/etc/machine-id"  # the host's id, not the image's
    argv = shell_command(hostd)
    assert argv == ["sriov-hostd", "run", "--config", "/etc/sriov/host.conf",
                    "--sysfs-root", "/sys"]  # fmt: skip
    build_parser().parse_args(argv[1:])
    argv = shell_command(offload)
    assert argv[0] == "sriov-offload"
    args = offload_parser().parse_args(argv[1:])
    assert args.host_id == "$SRIOV_HOST_ID"  # the node's own nats.env names the host
    assert args.vswitchd_ctl.endswith("ovs-vswitchd.pid")
    ovs_mount = {m["mountPath"]: volumes[m["name"]] for m in offload["volumeMounts"]}
    assert Path(args.ovsdb.removeprefix("unix:")).parent == Path("/var/run/openvswitch")
    assert ovs_mount["/var/run/openvswitch"] == "/var/run/openvswitch"
    assert ovs_mount["/etc/machine-id"] == "/etc/machine-id"
    for c in (hostd, offload):
        assert ". /etc/sriov/nats.env" in " ".join(c["args"]), "credentials from the node"
        assert not any(k.startswith("SRIOV_NATS_PASS") for k in env_of(c))


def test_services_run_replicated_with_disruption_budgets(rendered: list[Doc]) -> None:
    for name in ("sriov-inventory", "sriov-scheduler"):
        dep = find(rendered, "Deployment", name)
        assert dep["spec"]["replicas"] >= 2, f"{name}: one replica is a single point of failure"
        pdb = find(rendered, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"] == dep["spec"]["selector"]
        c = containers(dep)[0]
        assert c["command"] == [name]
        assert env_of(c)["SRIOV_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env_of(c)["SRIOV_STREAM_REPLICAS"] == "3"  # as many as the NATS cluster's nodes
        assert {"secretRef": {"name": f"sriov-nats-{name.removeprefix('sriov-')}"}} in c["envFrom"]
        assert env_of(c)["SRIOV_DATABASE_URL"] == {
            "secretKeyRef": {"name": "sriov-db-app", "key": "uri"}
        }


def _known_env() -> dict[str, set[str]]:
    from sriov.inventory.settings import InventorySettings
    from sriov.offload.settings import OffloadSettings
    from sriov.scheduler.settings import SchedulerSettings

    def names(cls: Any) -> set[str]:
        return {"SRIOV_" + f.upper() for f in cls.__struct_fields__}

    common = {"SRIOV_LOG_FORMAT", "SRIOV_LOG_LEVEL"}
    return {
        "sriov-hostd": names(BusSettings) | common,
        "sriov-offload": names(OffloadSettings) | common,
        "sriov-inventory": names(InventorySettings) | common,
        "sriov-scheduler": names(SchedulerSettings) | common,
    }


OTEL_ENV = {
    "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_PROMETHEUS_HOST", "OTEL_EXPORTER_PROMETHEUS_PORT",
}  # fmt: skip
# the collector's port (by its name) each OTLP transport must be sent to
OTLP_PORT_NAME = {"http/protobuf": "otlp-http", "grpc": "otlp-grpc"}


def test_environment_variables_are_ones_the_services_read(rendered: list[Doc]) -> None:
    known = _known_env()
    services = {d["metadata"]["name"]: d for d in by_kind(rendered, "Service")}
    for w in workloads(rendered):
        for c in containers(w):
            program = shell_command(c)[0]
            if program not in known:
                continue
            env = env_of(c)
            for name in env:
                assert name in known[program] | OTEL_ENV, f"{program}: {name} is read by nobody"
            url = env["SRIOV_NATS_URL"]
            assert url.split("://")[1] == "nats.sriov.svc:4222", "the Helm release's Service"
            otlp = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
            svc, _, port = otlp.removeprefix("http://").partition(":")
            target = services[svc.split(".")[0]]
            port_names = {p["port"]: p["name"] for p in target["spec"]["ports"]}
            protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            assert protocol in telemetry.OTLP_PROTOCOLS, f"{program}: {protocol!r}"
            assert port_names.get(int(port)) == OTLP_PORT_NAME[protocol], (
                f"{program}: {protocol} sent to {otlp}, the collector's {port_names.get(int(port))}"
            )
            assert env["OTEL_SERVICE_NAME"] == program
            metrics_port = int(env["OTEL_EXPORTER_PROMETHEUS_PORT"])
            assert metrics_port in {p["containerPort"] for p in c["ports"]}


def test_services_are_probed_over_their_own_http_listener(rendered: list[Doc]) -> None:
    """Every service answers /readyz and /healthz itself (runtime.serve, SRIOV_HTTP_PORT):
    no probe execs sriovctl, and each probe names the port the service listens on."""
    probed = set()
    for w in workloads(rendered):
        for c in containers(w):
            program = shell_command(c)[0]
            if program not in _known_env():
                continue
            env, where = env_of(c), f"{key(w)} container {c['name']}"
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert env["SRIOV_HTTP_HOST"] == "0.0.0.0", f"{where}: the kubelet calls the pod IP"
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"),
                                ("startupProbe", "/healthz")):  # fmt: skip
                get = c[probe]["httpGet"]
                assert get["path"] == path and "exec" not in c[probe], f"{where}: {probe}"
                assert ports[get["port"]] == int(env["SRIOV_HTTP_PORT"]), f"{where}: {probe}"
            probed.add(program)
    assert probed == {"sriov-hostd", "sriov-offload", "sriov-inventory", "sriov-scheduler"}


def test_services_select_pods_and_name_their_ports(rendered: list[Doc]) -> None:
    for svc in by_kind(rendered, "Service"):
        sel = svc["spec"]["selector"]
        pods = [
            w for w in workloads(rendered)
            if sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()
            and w["metadata"]["namespace"] == svc["metadata"]["namespace"]
        ]  # fmt: skip
        assert pods, f"Service {svc['metadata']['name']} selects no pod"
        names = {p["name"] for w in pods for c in containers(w) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str):
                assert p["targetPort"] in names, f"{svc['metadata']['name']}: {p['targetPort']}"


def test_collector_pipelines_use_defined_components_and_reach_jaeger(
    rendered: list[Doc],
) -> None:
    conf = yaml.safe_load(find(rendered, "ConfigMap", "otel-collector")["data"]["config.yaml"])
    for pipeline in conf["service"]["pipelines"].values():
        for section in ("receivers", "processors", "exporters"):
            for name in pipeline.get(section, []):
                assert name in conf[section], f"collector: {section} {name} is not defined"
    host, port = conf["exporters"]["otlp/jaeger"]["endpoint"].split(":")
    jaeger = find(rendered, "Service", host.split(".")[0])
    assert int(port) in {p["port"] for p in jaeger["spec"]["ports"]}
    dep = find(rendered, "Deployment", "otel-collector")
    mount = containers(dep)[0]["volumeMounts"][0]["mountPath"]
    assert containers(dep)[0]["args"] == [f"--config={mount}/config.yaml"]


def test_tls_overlay_points_every_client_at_a_ca() -> None:
    docs = render(K8S / "overlays/production")
    certs = {c["spec"]["secretName"] for c in by_kind(docs, "Certificate")}
    for w in workloads(docs):
        for c in containers(w):
            env = env_of(c)
            if "SRIOV_NATS_URL" not in env:
                continue
            assert env["SRIOV_NATS_URL"].startswith("tls://"), (key(w), c["name"])
            ca = Path(env["SRIOV_NATS_TLS_CA"])
            if w["kind"] == "DaemonSet":
                assert ca.parent == Path("/etc/sriov")  # the node's own file
                continue
            mount = next(m for m in c["volumeMounts"] if Path(m["mountPath"]) == ca.parent)
            vol = next(v for v in w["spec"]["template"]["spec"]["volumes"]
                       if v["name"] == mount["name"])  # fmt: skip
            assert vol["secret"]["secretName"] in certs
            assert vol["secret"]["items"] == [{"key": "ca.crt", "path": ca.name}]  # no key


def test_grafana_dashboard_is_shipped_for_the_sidecar(rendered: list[Doc]) -> None:
    cm = find(rendered, "ConfigMap", "sriov-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    assert json.loads(text)["uid"] == "sriov-control-plane"


def test_operations_guide_covers_every_secret_and_the_restart_command(
    rendered: list[Doc],
) -> None:
    guide = (DEPLOY / "OPERATIONS.md").read_text()
    generated = {"sriov-db-app", "nats-server-tls", "sriov-ca"}  # by operators (CNPG, cert-manager)
    for w in workloads(rendered):
        pod = w["spec"]["template"]["spec"]
        refs = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for c in containers(w):
            refs |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            refs |= {
                v["secretKeyRef"]["name"] for v in env_of(c).values()
                if isinstance(v, dict) and "secretKeyRef" in v
            }  # fmt: skip
        for ref in refs - generated:
            assert ref in guide, f"OPERATIONS.md does not tell how to create Secret {ref}"
    assert "kubectl -n sriov-host rollout restart ds sriov-host" in guide
