"""sriov-offload's settings: each field declares its option, help and limits once
(``--audit-interval``, also ``SRIOV_AUDIT_INTERVAL``); see ``sriov.common.config``."""

from __future__ import annotations

from typing import Annotated, Self

from sriov.common import subjects
from sriov.common.config import option, setting_error
from sriov.common.errors import InvalidRequest
from sriov.common.runtime import BusSettings
from sriov.hostd.hostconf import load_host_conf, machine_host_id
from sriov.offload.control import Restarter

DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_CTL = "/var/run/openvswitch/ovs-vswitchd.pid"
DEFAULT_RESTART = "systemctl restart ovs-vswitchd"


class OffloadSettings(BusSettings, kw_only=True):
    """offload (also from SRIOV_* environment variables)"""

    host_id: Annotated[
        str, option("this host's id (default: host.conf's, else derived from /etc/machine-id)")
    ] = ""
    """Left out: the id hostd uses (host.conf's ``host_id``, or the machine's derived id)."""
    ovsdb: Annotated[str, option("OVSDB remote (unix:PATH)")] = DEFAULT_OVSDB
    vswitchd_ctl: Annotated[str, option("ovs-vswitchd control socket or pidfile")] = DEFAULT_CTL
    """A pidfile names the socket ``ovs-vswitchd.<pid>.ctl`` (found again at each connect)."""
    config: Annotated[str | None, option("host.conf to read ovs_offload_nics from")] = None
    """host.conf (``ovs_offload_nics``, ``disable_security_group``)."""
    sysfs_root: Annotated[str, option("where sysfs is mounted")] = "/sys"
    audit_interval: Annotated[float, option("seconds between audits", gt=0)] = 30.0
    allow_restart: Annotated[
        bool, option("allow restarting ovs-vswitchd when a change needs it and the request asks")
    ] = False
    restart_command: Annotated[str, option("how to restart ovs-vswitchd")] = DEFAULT_RESTART
    restart_timeout: Annotated[float, option("seconds the restart may take")] = 60.0

    def check(self) -> Self:
        super().check()
        if not self.host_id:
            conf = load_host_conf(self.config) if self.config is not None else None
            self.host_id = conf.host_id if conf is not None else machine_host_id()
        try:
            subjects.token(self.host_id, "host_id")
        except InvalidRequest as exc:
            raise setting_error(type(self), "host_id", str(exc), self.host_id) from exc
        if self.config is not None:
            load_host_conf(self.config)  # fail fast on a broken file: file:line: key: problem
        if self.allow_restart:
            Restarter.from_string(self.restart_command, self.restart_timeout)
        return self
