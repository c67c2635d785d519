"""``sriov-offload``: the per-host OVS offload agent (runs beside hostd).

    sriov-offload --host-id H --ovsdb unix:/var/run/openvswitch/db.sock \\
        --vswitchd-ctl /var/run/openvswitch/ovs-vswitchd.pid [--config host.conf] \\
        [--sysfs-root /sys] [--audit-interval 30] [--allow-restart] [NATS options]

Every option also reads ``SRIOV_<OPTION>`` from the environment (``SRIOV_HOST_ID``...).

    sriov-offload audit --dump FILE [--type offloaded] [-o json]

audits a saved ``ovs-appctl dpctl/dump-flows`` output offline (:mod:`sriov.offload.offline`);
with no subcommand the agent runs, so existing units and manifests stay valid.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Sequence

from sriov.common import runtime
from sriov.common.bus import Bus, ServiceHost
from sriov.common.config import argument_parser, from_args
from sriov.common.errors import ConfigError, SriovError
from sriov.hostd.pciids import PciIds
from sriov.offload.checks import ModelName
from sriov.offload.control import OffloadControl, Restarter
from sriov.offload.nics import NicSysfs
from sriov.offload.ovsdb import Ovsdb
from sriov.offload.probes import Probes, SystemProbes
from sriov.offload.service import OffloadService
from sriov.offload.settings import OffloadSettings
from sriov.offload.topology import NicChecker
from sriov.offload.vswitchd import Vswitchd

log = logging.getLogger(__name__)
NAME = "sriov-offload"
DESCRIPTION = "OVS hw-offload control and audit"


def parser() -> argparse.ArgumentParser:
    p = argument_parser(OffloadSettings, NAME, DESCRIPTION)
    p.epilog = "'sriov-offload audit --dump FILE' audits a saved dpctl/dump-flows offline."
    return p


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
            NicSysfs(settings.sysfs_root),
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
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["audit"]:
        from sriov.offload import offline

        try:
            sys.exit(offline.main(args[1:]))
        except SriovError as exc:
            print(f"{offline.PROG}: error: {exc}", file=sys.stderr)
            sys.exit(2)

    async def run() -> None:
        settings = from_args(OffloadSettings, parser().parse_args(argv))
        log.info("host_id %s", settings.host_id)  # what sriovctl nats-config needs
        await runtime.serve(
            NAME, DESCRIPTION, settings, body, metadata={"host_id": settings.host_id}
        )

    runtime.run(run, NAME)


if __name__ == "__main__":
    main()
