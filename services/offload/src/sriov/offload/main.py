"""``sriov-offload``: the per-host OVS offload agent (runs beside hostd).

    sriov-offload --host-id H --ovsdb unix:/var/run/openvswitch/db.sock \\
        --vswitchd-ctl /var/run/openvswitch/ovs-vswitchd.pid [--config host.conf] \\
        [--sysfs-root /sys] [--audit-interval 30] [--allow-restart] [NATS options]

Every option also reads ``SRIOV_<OPTION>`` from the environment (``SRIOV_HOST_ID``...).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence

from sriov.common import runtime, subjects
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import ConfigError, InvalidRequest
from sriov.hostd.hostconf import load_host_conf
from sriov.hostd.pciids import PciIds
from sriov.offload.checks import ModelName
from sriov.offload.control import OffloadControl, Restarter
from sriov.offload.nics import Sysfs
from sriov.offload.ovsdb import Ovsdb
from sriov.offload.probes import Probes, SystemProbes
from sriov.offload.service import OffloadService
from sriov.offload.topology import NicChecker
from sriov.offload.vswitchd import Vswitchd

NAME = "sriov-offload"
DESCRIPTION = "OVS hw-offload control and audit"
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_CTL = "/var/run/openvswitch/ovs-vswitchd.pid"
DEFAULT_RESTART = "systemctl restart ovs-vswitchd"


class OffloadSettings(runtime.BusSettings, kw_only=True):
    host_id: str
    ovsdb: str = DEFAULT_OVSDB
    """OVSDB remote (``unix:PATH``)."""
    vswitchd_ctl: str = DEFAULT_CTL
    """ovs-vswitchd's unixctl socket, or its pidfile (the socket is ``ovs-vswitchd.<pid>.ctl``)."""
    config: str | None = None
    """host.conf (``ovs_offload_nics``, ``disable_security_group``)."""
    sysfs_root: str = "/sys"
    audit_interval: float = 30.0
    allow_restart: bool = False
    """May restart ovs-vswitchd when a change needs it and the request allows it."""
    restart_command: str = DEFAULT_RESTART
    restart_timeout: float = 60.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=NAME, description=DESCRIPTION)
    p.add_argument("--host-id", help="this host's id (as in host.conf)")
    p.add_argument("--ovsdb", help=f"OVSDB remote (default {DEFAULT_OVSDB})")
    p.add_argument(
        "--vswitchd-ctl", help=f"ovs-vswitchd control socket or pidfile (default {DEFAULT_CTL})"
    )
    p.add_argument("--config", help="host.conf to read ovs_offload_nics from")
    p.add_argument("--sysfs-root", help="where sysfs is mounted (default /sys)")
    p.add_argument("--audit-interval", type=float, help="seconds between audits (default 30)")
    p.add_argument(
        "--allow-restart",
        action="store_true",
        default=None,
        help="allow restarting ovs-vswitchd when a change needs it and the request asks",
    )
    p.add_argument("--restart-command", help=f"how to restart it (default: {DEFAULT_RESTART})")
    p.add_argument("--restart-timeout", type=float, help="seconds the restart may take")
    runtime.add_bus_args(p)
    return p


def settings_from(argv: Sequence[str] | None) -> OffloadSettings:
    p = parser()
    args = p.parse_args(argv)
    if not args.instance_id:
        args.instance_id = f"{socket.gethostname()}-{os.getpid()}"
    settings: OffloadSettings = runtime.settings_from_args(OffloadSettings, args, p)
    validate(settings)
    return settings


def validate(s: OffloadSettings) -> None:
    try:
        subjects.token(s.host_id, "host_id")
    except InvalidRequest as exc:
        raise ConfigError(f"--host-id: {exc}") from exc
    if s.audit_interval <= 0:
        raise ConfigError(f"--audit-interval must be greater than 0, got {s.audit_interval}")
    if s.config is not None:
        load_host_conf(s.config)  # fail fast on a broken file: file:line: key: problem
    if s.allow_restart:
        Restarter.from_string(s.restart_command, s.restart_timeout)


@contextlib.asynccontextmanager
async def agent(
    settings: OffloadSettings,
    bus: Bus,
    service: ServiceHost,
    *,
    probes: Probes | None = None,
) -> AsyncIterator[OffloadService]:
    """Build the agent, register its endpoints, and close the OVSDB replica on exit."""
    ovsdb = Ovsdb(settings.ovsdb)
    ovsdb.start()
    try:
        vswitchd = Vswitchd(settings.vswitchd_ctl)
        restarter = (
            Restarter.from_string(settings.restart_command, settings.restart_timeout)
            if settings.allow_restart
            else None
        )
        control = OffloadControl(settings.host_id, ovsdb, vswitchd, restarter=restarter)
        checker = NicChecker(
            settings.config,
            Sysfs(settings.sysfs_root),
            probes or SystemProbes(),
            model_name=_model_names(),
            host_id=settings.host_id,
        )
        svc = OffloadService(
            settings.host_id, bus, ovsdb, vswitchd, control, checker,
            audit_interval=settings.audit_interval,
        )  # fmt: skip
        await svc.register(service)
        yield svc
    finally:
        await ovsdb.close()


def _model_names() -> ModelName | None:
    """pci.ids device names (hwdata), or None where the file is missing."""
    try:
        return PciIds().device
    except ConfigError:
        return None


async def body(ctx: runtime.ServiceContext) -> None:
    """Register endpoints and start the audit loop; the runtime waits for stop."""
    svc = await ctx.stack.enter_async_context(agent(ctx.settings, ctx.bus, ctx.service))
    ctx.spawn(svc.run(ctx.stop), "offload audit loop")


def main(argv: Sequence[str] | None = None) -> None:
    async def run() -> None:
        settings = settings_from(argv)
        await runtime.serve(
            NAME, DESCRIPTION, settings, body, metadata={"host_id": settings.host_id}
        )

    runtime.run(run, NAME)


if __name__ == "__main__":
    main()
