"""The host's offload NICs as host.conf names them: run the checks and map datapath ports
(PF, bond, VF representor) to the PF they belong to, for per-PF audit counters.

host.conf is re-read on every run, so an edit shows up without restarting the agent; a
broken file becomes an error finding (the agent keeps serving), not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sriov.common.errors import ConfigError
from sriov.common.schemas import Finding
from sriov.hostd.hostconf import load_host_conf
from sriov.offload.checks import ModelName, check_nics
from sriov.offload.nics import NicSysfs
from sriov.offload.probes import Probes


@dataclass
class Topology:
    findings: list[Finding] = field(default_factory=list)
    port_pf: dict[str, str] = field(default_factory=dict)
    """Datapath port name -> offload PF (or bond) it belongs to."""
    offload_nics: list[str] = field(default_factory=list)


class NicChecker:
    def __init__(
        self,
        config: str | Path | None,
        sysfs: NicSysfs,
        probes: Probes,
        model_name: ModelName | None = None,
        host_id: str | None = None,
    ) -> None:
        self.host_id = host_id
        self.config = config
        self.sysfs = sysfs
        self.probes = probes
        self.model_name = model_name

    async def run(self) -> Topology:
        if self.config is None:
            return Topology(
                findings=[
                    Finding(
                        check="hostconf.missing",
                        severity="info",
                        message="no host.conf given: the offload NIC checks are skipped",
                        evidence="sriov-offload was started without --config",
                        fix="start sriov-offload with --config /etc/yunion/host.conf",
                    )
                ]
            )
        try:
            conf = load_host_conf(self.config)
        except ConfigError as exc:
            return Topology(
                findings=[
                    Finding(
                        check="hostconf.invalid",
                        severity="error",
                        message="host.conf cannot be read; the offload NIC checks are skipped",
                        evidence=str(exc),
                        fix="fix host.conf at the line named",
                    )
                ]
            )
        findings: list[Finding] = []
        if self.host_id is not None and conf.host_id != self.host_id:
            findings.append(
                Finding(
                    check="hostconf.host_id",
                    severity="warning",
                    message=f"host.conf names this host {conf.host_id!r} but the offload agent "
                    f"runs as {self.host_id!r}: hostd and offload report under different ids",
                    evidence=f"{self.config}: host_id: {conf.host_id}",
                    fix="start sriov-offload with --host-id equal to host.conf's host_id",
                )
            )
        findings += await check_nics(
            conf.ovs_offload_nics,
            sysfs=self.sysfs,
            probes=self.probes,
            disable_security_group=conf.disable_security_group,
            model_name=self.model_name,
        )
        return Topology(findings, self.port_map(conf.ovs_offload_nics), conf.ovs_offload_nics)

    def offload_nics(self) -> list[str]:
        """host.conf's ``ovs_offload_nics`` (empty without a readable host.conf)."""
        if self.config is None:
            return []
        try:
            return load_host_conf(self.config).ovs_offload_nics
        except ConfigError:
            return []

    def port_map(self, names: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in names:
            bond = self.sysfs.bond(name)
            members = bond.members if bond is not None else [name]
            owner = name
            out[name] = owner
            for member in members:
                out.setdefault(member, owner if bond is not None else member)
                if self.sysfs.exists(member):
                    for rep in self.sysfs.pf(member, bond.name if bond else None).representors:
                        out.setdefault(rep.ifname, out[member])
        return out
