"""``sriovctl nats-config``: files, modes, re-runs, errors, and a real server that uses them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from sriov.cli import nats_bundle as nb
from sriov.cli.main import cli
from sriov.common import schemas as m
from sriov.common import subjects as s
from sriov.common.config import from_env
from sriov.common.runtime import BusSettings, connect_bus
from sriov.devtools.embedded import NatsServer


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def generate(out: Path, *extra: str) -> dict[str, object]:
    code, text = run("nats-config", "--out", str(out), "--json", *extra)
    assert code == 0, text
    summary: dict[str, object] = json.loads(text)
    return summary


def seeds(out: Path) -> dict[str, str]:
    return nb.read_existing(out).seeds


def test_writes_server_config_and_one_private_env_file_per_identity(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    code, text = run(
        "nats-config", "--out", str(out), "--hosts", "node-a,node-b", "--client", "cloud",
        "--url", "nats://nats.sriov.svc:4222",
    )  # fmt: skip
    assert code == 0, text
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "admin/sriov-operator.env", "admin/sriov-stream-admin.env", "admin/sys.env",
        "clients/cloud.env", "hosts/node-a.env", "hosts/node-b.env", "server/auth.conf",
        "server/revoked.txt",
        "services/sriov-inventory.env", "services/sriov-scheduler.env",
    ]  # fmt: skip
    for path in out.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    env = nb.read_env((out / "hosts/node-a.env").read_text())
    assert env["SRIOV_HOST_ID"] == "node-a"
    assert env["SRIOV_NATS_USER"] == "host-node-a"
    assert env["SRIOV_NATS_INBOX_PREFIX"] == s.inbox_prefix("host", "node-a")
    assert env["SRIOV_NATS_URL"] == "nats://nats.sriov.svc:4222"
    server_conf = (out / nb.SERVER_FILE).read_text()
    for user, seed in seeds(out).items():
        assert seed not in text, f"{user}'s seed printed"
        assert seed not in server_conf, f"{user}'s seed stored in the server's file"
        assert f'"{nb.public_key(seed)}"' in server_conf


def test_rerun_keeps_keys_adds_hosts_rotates_and_revokes_for_good(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    generate(out, "--hosts", "node-a")
    first = seeds(out)
    summary = generate(out, "--hosts", "node-a,node-b")
    second = seeds(out)
    assert {k: second[k] for k in first} == first
    users = {u["user"]: u["key"] for u in summary["users"]}  # type: ignore[attr-defined]
    assert users["host-node-b"] == "new" and users["host-node-a"] == "kept"
    generate(out, "--hosts", "node-a,node-b", "--rotate", "host-node-a")
    third = seeds(out)
    assert third["host-node-a"] != second["host-node-a"]
    assert third["host-node-b"] == second["host-node-b"]
    summary = generate(out, "--hosts", "node-b")
    assert summary["dropped"] == ["host-node-a"]
    assert not (out / "hosts/node-a.env").exists()  # its seed is gone with it
    revoked = (out / nb.REVOKED_FILE).read_text()
    assert nb.public_key(second["host-node-a"]) in revoked  # rotated: never valid again
    assert nb.public_key(third["host-node-a"]) in revoked  # removed
    generate(out, "--hosts", "node-a,node-b")  # added again: a new key, not the old one
    assert seeds(out)["host-node-a"] not in (second["host-node-a"], third["host-node-a"])
    assert nb.public_key(third["host-node-a"]) not in (out / nb.SERVER_FILE).read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hosts", "node a"], "host_id 'node a' cannot be used in a subject"),
        (["--hosts", "a.b"], "host_id 'a.b' cannot be used in a subject"),
        (["--hosts", "x,x"], "host-x is listed twice"),
        ([], "give at least one host"),
        (["--hosts", "a", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--hosts", "a", "--rotate", "nobody"], "--rotate names no generated user: nobody"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "creds"
    code, text = run("nats-config", "--out", str(out), *args)
    assert code == 2
    assert message in text
    assert not out.exists()


def test_permissions_command_explains_an_identity() -> None:
    code, text = run("nats-permissions", "--role", "host", "--host-id", "node-a", "--json")
    assert code == 0, text
    perms = json.loads(text)
    assert s.host_heartbeat("node-a").subject in perms["publish"]
    assert s.endpoint(s.hostcmd_group("node-a"), "rescan").subject in perms["subscribe"]
    assert not any("node-b" in x for x in perms["publish"] + perms["subscribe"])
    code, text = run("nats-permissions", "--role", "host")
    assert code == 2 and "--host-id" in text


async def test_daemon_connects_with_its_generated_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server includes the generated file; a host's env vars are what the runtime reads."""
    store = tmp_path / "nats"
    generate(store / "creds", "--hosts", "node-a")
    server = NatsServer(store_dir=store, config_text=f'include "creds/{nb.SERVER_FILE}"\n')
    server.start()
    try:
        admin_env = nb.read_env((store / "creds/admin/sriov-stream-admin.env").read_text())
        host_env = nb.read_env((store / "creds/hosts/node-a.env").read_text())
        for env, name in ((admin_env, "admin"), (host_env, "sriov-hostd")):
            for key, value in {**env, "SRIOV_NATS_URL": server.url}.items():
                monkeypatch.setenv(key, value)
            bus = await connect_bus(from_env(BusSettings), name)
            try:
                if name == "admin":
                    await bus.ensure_streams()
                else:
                    hb = m.Heartbeat(host_id="node-a", generation=1, seq=1, interval_s=10)
                    assert await bus.js_publish(s.host_heartbeat("node-a"), hb)
                    assert bus.new_inbox().startswith(host_env["SRIOV_NATS_INBOX_PREFIX"])
            finally:
                await bus.close()
    finally:
        server.stop()
