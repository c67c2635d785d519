"""TLS between clients and NATS, with a CA and certificates this test makes (openssl CLI)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sriov.cli import nats_bundle as nb
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.bus import Bus
from sriov.common.errors import BusError
from sriov.devtools.embedded import NatsServer

HOST = "node-a"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.crt"


def _leaf(d: Path, name: str, ext: str) -> tuple[Path, Path]:
    (d / f"{name}.ext").write_text(
        f"{ext}\nbasicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.crt", d / f"{name}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _ca(d, "ca")
    server = _leaf(d, "server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    client = _leaf(d, "client", "extendedKeyUsage=clientAuth")
    other = _ca(d, "other")
    return Pki(ca, *server, *client, other)


def _server(tmp: Path, pki: Pki, *, verify: bool) -> tuple[NatsServer, dict[str, str]]:
    tls = nb.ServerTls(str(pki.server_cert), str(pki.server_key), str(pki.ca), verify)
    bundle = nb.build_bundle([HOST], server_tls=tls)
    conf = bundle.files[nb.SERVER_FILE]
    host = next(i for i in bundle.identities if i.host_id == HOST)
    env = nb.read_env(bundle.files[host.env_name])
    return NatsServer(store_dir=tmp / "nats", config_text=conf).start(), env


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[tuple[NatsServer, dict[str, str]]]:
    server, env = _server(tmp_path, pki, verify=False)
    try:
        yield server, env
    finally:
        server.stop()


@pytest.fixture
def mtls_server(tmp_path: Path, pki: Pki) -> Iterator[tuple[NatsServer, dict[str, str]]]:
    server, env = _server(tmp_path, pki, verify=True)
    try:
        yield server, env
    finally:
        server.stop()


async def _connect(url: str, env: dict[str, str], **tls: str) -> Bus:
    return await Bus.connect(
        url.replace("nats://", "tls://"),
        name="tls-test",
        nkey_seed=env["SRIOV_NATS_NKEY_SEED"],
        inbox_prefix=env["SRIOV_NATS_INBOX_PREFIX"],
        first_connect_attempts=1,
        connect_timeout=0.5,  # a refused handshake is retried until this budget is spent
        **tls,
    )


async def test_client_with_the_ca_connects_over_tls(
    tls_server: tuple[NatsServer, dict[str, str]], pki: Pki
) -> None:
    server, env = tls_server
    bus = await _connect(server.url, env, tls_ca=str(pki.ca))
    try:
        # The server requires TLS (a plain client is refused, below), so this is TLS.
        assert bus.is_connected
        await bus.publish(
            s.host_heartbeat(HOST), m.Heartbeat(host_id=HOST, generation=1, seq=1, interval_s=1)
        )
        await bus.flush()
    finally:
        await bus.close()


@pytest.mark.parametrize("ca", ["none", "other"])
async def test_client_without_the_right_ca_is_refused(
    tls_server: tuple[NatsServer, dict[str, str]], pki: Pki, ca: str
) -> None:
    server, env = tls_server
    tls = {"tls_ca": str(pki.other_ca)} if ca == "other" else {}
    with pytest.raises(BusError) as err:
        await _connect(server.url, env, **tls)
    assert env["SRIOV_NATS_NKEY_SEED"] not in str(err.value)


async def test_plain_client_is_refused_by_a_tls_server(
    tls_server: tuple[NatsServer, dict[str, str]],
) -> None:
    server, env = tls_server
    with pytest.raises(BusError):
        await Bus.connect(
            server.url,
            name="plain",
            nkey_seed=env["SRIOV_NATS_NKEY_SEED"],
            first_connect_attempts=1,
            connect_timeout=0.5,
        )


async def test_mutual_tls_needs_a_client_certificate(
    mtls_server: tuple[NatsServer, dict[str, str]], pki: Pki
) -> None:
    server, env = mtls_server
    with pytest.raises(BusError):
        await _connect(server.url, env, tls_ca=str(pki.ca))
    bus = await _connect(
        server.url,
        env,
        tls_ca=str(pki.ca),
        tls_cert=str(pki.client_cert),
        tls_key=str(pki.client_key),
    )
    await bus.close()
