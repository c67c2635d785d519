"""``sriovctl nats-config`` and ``nats-permissions``: per-host NATS credentials for a fleet.

``nats-config`` writes the server's accounts file (public nkeys only) and one environment
file per identity (host, service, operator...) holding its nkey seed, mode 0600. Re-running
it keeps every existing seed, so adding a host never disturbs the others; ``--rotate USER``
replaces one and a host no longer listed loses its file, its key revoked for good. It never
prints a seed. Works offline: it talks to no server.
"""

from __future__ import annotations

from pathlib import Path

import click

from sriov.cli import nats_auth as na
from sriov.cli import nats_bundle as nb
from sriov.cli.context import CliContext
from sriov.cli.output import Report, Table, command, fail
from sriov.common.bus import STREAMS, Bus
from sriov.common.errors import SriovError


def _names(values: tuple[str, ...], files: tuple[Path, ...]) -> list[str]:
    out: list[str] = []
    for value in values:
        out += [v.strip() for v in value.split(",") if v.strip()]
    for path in files:
        for raw in path.read_text(encoding="utf-8").splitlines():
            name = raw.split("#", 1)[0].strip()
            if name:
                out.append(name)
    return out


@command("nats-config")
@click.option("--hosts", multiple=True, help="Host ids, comma separated (repeatable).")
@click.option(
    "--hosts-file",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File with one host id per line (# comments allowed).",
)
@click.option("--client", "clients", multiple=True, help="An external system's name (repeatable).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (created 0700; earlier keys in it are kept).",
)
@click.option("--url", "nats_url", help="NATS URL(s) to write into every environment file.")
@click.option("--rotate", multiple=True, help="Give this user a new nkey (repeatable).")
@click.option("--tls-cert", help="Server certificate path, as the server sees it.")
@click.option("--tls-key", help="Server key path, as the server sees it.")
@click.option("--tls-ca", help="CA for client certificates (server side).")
@click.option("--tls-verify", is_flag=True, help="Require client certificates (mutual TLS).")
@click.option("--client-tls-ca", help="CA path on the clients (SRIOV_NATS_TLS_CA).")
def nats_config(
    hosts: tuple[str, ...],
    hosts_file: tuple[Path, ...],
    clients: tuple[str, ...],
    out: Path,
    nats_url: str | None,
    rotate: tuple[str, ...],
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_verify: bool,
    client_tls_ca: str | None,
) -> Report:
    """Generate NATS accounts, per-host users and permissions for a fleet.

    \b
    Writes into OUT:
      server/auth.conf       include it from nats-server.conf (`include "auth.conf"`)
      hosts/<host>.env       copy to that host as /etc/sriov/nats.env (mode 0600)
      services/<svc>.env     a Kubernetes Secret or systemd EnvironmentFile per service
      server/revoked.txt     public keys rotated or removed: never accepted again
      admin/*.env            operator (sriovctl), stream admin, system account (root:
                             keep sys.env offline, never on a pod or host)
    """
    try:
        host_ids = _names(hosts, hosts_file)
        if not host_ids:
            raise click.UsageError("give at least one host with --hosts or --hosts-file")
        if bool(tls_cert) != bool(tls_key):
            raise click.UsageError("--tls-cert and --tls-key go together")
        if tls_verify and not tls_ca:
            raise click.UsageError("--tls-verify needs --tls-ca (the CA of client certificates)")
        server_tls = (
            nb.ServerTls(tls_cert, tls_key, tls_ca, tls_verify) if tls_cert and tls_key else None
        )
        client_tls = nb.ClientTls(ca_file=client_tls_ca) if client_tls_ca else None
        existing = nb.read_existing(out) if out.exists() else nb.Existing()
        unknown = sorted(set(rotate) - {i.user for i in na.fleet_identities(host_ids, clients)})
        if unknown:
            raise click.UsageError(f"--rotate names no generated user: {', '.join(unknown)}")
        bundle = nb.build_bundle(
            host_ids,
            clients=clients,
            existing=existing,
            rotate=rotate,
            nats_url=nats_url,
            server_tls=server_tls,
            client_tls=client_tls,
        )
        nb.write_bundle(bundle, out)
    except SriovError as exc:
        fail(f"{exc} [{exc.code}]", 2)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", 1)
    rows = [
        {
            "user": i.user,
            "role": i.role,
            "host_id": i.host_id,
            "file": str(out / i.env_name),
            "key": "new" if i.user in bundle.created else "kept",
        }
        for i in bundle.identities
    ]
    dropped = sorted(bundle.removed)
    summary = {"server_config": str(out / nb.SERVER_FILE), "users": rows, "dropped": dropped}
    return Report(summary, [
        Table(["User", "Role", "Host", "Environment file", "Key"],
              [[r["user"], r["role"], r["host_id"] or "", r["file"], r["key"]] for r in rows],
              f"*** Total: {len(rows)} ***"),
        f"server config: {out / nb.SERVER_FILE} (public nkeys; reload nats-server)",
        *(f"revoked: {user} is no longer configured; its key is revoked and its environment "
          "file deleted" for user in dropped),
    ])  # fmt: skip


@command("nats-permissions")
@click.option(
    "--role",
    type=click.Choice(["host", "inventory", "scheduler", "operator", "stream-admin", "client"]),
    required=True,
)
@click.option("--host-id", help="For --role host.")
@click.option("--name", help="For --role client.")
def nats_permissions(role: str, host_id: str | None, name: str | None) -> Report:
    """Show what one identity may publish and subscribe to (why the server refused)."""
    try:
        if role == "host":
            if not host_id:
                raise click.UsageError("--role host needs --host-id")
            ident = na.host_identity(host_id)
        elif role == "client":
            if not name:
                raise click.UsageError("--role client needs --name")
            ident = na.client_identity(name)
        elif role == "operator":
            ident = na.operator_identity()
        elif role == "stream-admin":
            ident = na.stream_admin_identity()
        else:
            ident = na.service_identity(role)
    except SriovError as exc:
        fail(f"{exc} [{exc.code}]", 2)
    perms = ident.permissions
    assert perms is not None
    data = {
        "user": ident.user,
        "inbox_prefix": ident.inbox_prefix,
        "publish": list(perms.publish),
        "subscribe": list(perms.subscribe),
        "allow_responses": perms.allow_responses,
    }
    rows = [["publish", x] for x in perms.publish] + [["subscribe", x] for x in perms.subscribe]
    return Report(data, [
        f"user: {ident.user}   inbox prefix: {ident.inbox_prefix}",
        f"may answer requests it receives: {'yes' if perms.allow_responses else 'no'}",
        Table(["Direction", "Subject"], rows),
    ])  # fmt: skip


@command("streams-provision")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 5))
@click.pass_obj
def streams_provision(obj: CliContext, replicas: int) -> Report:
    """Create or update every JetStream stream of the catalogue, then verify them.

    Run it with the stream admin's environment file (admin/sriov-stream-admin.env) at deploy
    and upgrade time: the running services may only read the streams' configuration.
    """

    async def call(bus: Bus) -> list[str]:
        await bus.ensure_streams(replicas=replicas)
        await bus.verify_streams(replicas=replicas)
        return [spec.name for spec in STREAMS]

    names = obj.run(call)
    return Report({"streams": names}, [f"provisioned and verified: {', '.join(names)}"])


COMMANDS = (nats_config, nats_permissions, streams_provision)
