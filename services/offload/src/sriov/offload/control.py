"""Read and set ``other_config:hw-offload`` (and ``tc-policy``, ``max-idle``), and know
whether the running ovs-vswitchd has picked the change up.

OVS semantics this follows (``lib/netdev-offload.c``): the flow API is switched on the
first time ovs-vswitchd sees ``hw-offload=true`` and never off again, and ``tc-policy`` is
read at that same moment. So enabling takes effect at once, while disabling, or changing
``tc-policy`` once offload is on, needs a restart; ``max-idle`` applies at once. The running
daemon's state is read from the userspace datapath (offload statistics are refused while the
flow API is off); where no datapath can say (the kernel one), the agent remembers what it
changed since the daemon (re)started -- a restart is seen as a new control-socket inode.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from dataclasses import dataclass, field

from sriov.common.errors import InvalidRequest, SriovError, Unavailable
from sriov.common.schemas import Finding, OffloadSetRequest, OffloadStatus
from sriov.offload.ovsdb import HW_OFFLOAD, MAX_IDLE, TC_POLICY, OvsConfig, Ovsdb
from sriov.offload.vswitchd import FlowApiState, Incarnation, Vswitchd

log = logging.getLogger(__name__)

TC_POLICIES = ("none", "skip_sw", "skip_hw")
MIN_MAX_IDLE_MS = 500
DISABLE_NEEDS_RESTART = (
    "hw-offload is off in OVSDB but the running ovs-vswitchd keeps its flow API on until "
    "it restarts"
)
ENABLE_PENDING = "hw-offload is on in OVSDB but the running ovs-vswitchd has not enabled it"
TC_POLICY_NEEDS_RESTART = (
    "tc-policy changed while offload was on: ovs-vswitchd reads it only when the flow API starts"
)


class RestartFailed(SriovError):
    code = "restart_failed"
    status = 500


@dataclass
class Restarter:
    """Runs the operator's restart command (``systemctl restart ovs-vswitchd``)."""

    command: list[str]
    timeout: float = 60.0

    @classmethod
    def from_string(cls, command: str, timeout: float = 60.0) -> Restarter:
        argv = shlex.split(command)
        if not argv:
            raise InvalidRequest("the restart command is empty", field="restart_command")
        return cls(argv, timeout)

    async def run(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RestartFailed(f"cannot run {shlex.join(self.command)}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RestartFailed(
                f"{shlex.join(self.command)} did not finish within {self.timeout}s"
            ) from None
        if proc.returncode != 0:
            text = (err or out).decode(errors="replace").strip()[-500:]
            raise RestartFailed(f"{shlex.join(self.command)} exited with {proc.returncode}: {text}")


@dataclass
class _Pending:
    """Restart reasons the agent knows of for one daemon incarnation."""

    incarnation: Incarnation | None = None
    reasons: list[str] = field(default_factory=list)


class OffloadControl:
    def __init__(
        self,
        host_id: str,
        ovsdb: Ovsdb,
        vswitchd: Vswitchd,
        *,
        restarter: Restarter | None = None,
        apply_timeout: float = 5.0,
    ) -> None:
        self.host_id = host_id
        self.ovsdb = ovsdb
        self.vswitchd = vswitchd
        self.restarter = restarter
        self.apply_timeout = apply_timeout
        self._pending = _Pending()
        self._lock = asyncio.Lock()

    async def status(self, findings: list[Finding] | None = None) -> OffloadStatus:
        """Settings in OVSDB, the running daemon's flow-API state and restart reasons."""
        cfg = await self.ovsdb.read()
        version = await self.vswitchd.version()
        api = await self.vswitchd.flow_api()
        return self._status(cfg, api, version, findings or [])

    async def set(self, req: OffloadSetRequest, findings: list[Finding]) -> OffloadStatus:
        """Write the settings, wait for ovs-vswitchd to apply them, restart if allowed."""
        updates = _validate(req)
        async with self._lock:  # one change at a time: restart bookkeeping is per change
            before = await self.ovsdb.read()
            # Both daemons must answer before anything changes, so an error means "nothing
            # was changed" rather than "half of it was".
            await self.vswitchd.version()
            api_before = await self.vswitchd.flow_api()
            self._note_incarnation()
            changed = {k: v for k, v in updates.items() if before.other_config.get(k) != v}
            applied = True
            if changed:
                next_cfg = await self.ovsdb.update_other_config(changed)
                applied = await self.ovsdb.wait_applied(next_cfg, self.apply_timeout)
                offload_was_on = api_before.enabled
                if offload_was_on is None:
                    offload_was_on = before.hw_offload
                if TC_POLICY in changed and offload_was_on and req.hw_offload:
                    self._add_reason(TC_POLICY_NEEDS_RESTART)
                if not req.hw_offload and offload_was_on:
                    self._add_reason(DISABLE_NEEDS_RESTART)
                log.info("other_config set: %s (applied=%s)", changed, applied)
            status = await self.status(findings)
            status.applied = applied
            if not applied:
                status.findings.append(_not_applied())
            if status.restart_required and req.allow_restart:
                status = await self._restart(status, findings)
            return status

    async def _restart(self, status: OffloadStatus, findings: list[Finding]) -> OffloadStatus:
        if self.restarter is None:
            status.findings.append(
                Finding(
                    check="offload.restart",
                    severity="warning",
                    message="a restart was requested but this agent may not restart ovs-vswitchd",
                    evidence="sriov-offload runs without --allow-restart",
                    fix="restart ovs-vswitchd by hand, or run sriov-offload with --allow-restart",
                )
            )
            return status
        before = self.vswitchd.incarnation()
        log.warning("restarting ovs-vswitchd: %s", "; ".join(status.restart_reasons))
        try:
            await self.restarter.run()
            await self.vswitchd.wait_restarted(before, self.restarter.timeout)
        except (RestartFailed, Unavailable) as exc:
            status.findings.append(
                Finding(
                    check="offload.restart",
                    severity="error",
                    message="restarting ovs-vswitchd failed",
                    evidence=str(exc),
                    fix="check the restart command and ovs-vswitchd's log",
                )
            )
            return status
        fresh = await self.status(findings)
        fresh.restarted = True
        return fresh

    # --- bookkeeping ------------------------------------------------------------------------
    def _note_incarnation(self) -> None:
        now = self.vswitchd.incarnation()
        if now != self._pending.incarnation:
            self._pending = _Pending(incarnation=now)

    def _add_reason(self, reason: str) -> None:
        if reason not in self._pending.reasons:
            self._pending.reasons.append(reason)

    def _status(
        self, cfg: OvsConfig, api: FlowApiState, version: str, findings: list[Finding]
    ) -> OffloadStatus:
        self._note_incarnation()
        reasons: list[str] = []
        if api.enabled is True and not cfg.hw_offload:
            reasons.append(DISABLE_NEEDS_RESTART)
        elif api.enabled is False and cfg.hw_offload:
            reasons.append(ENABLE_PENDING)
        for r in self._pending.reasons:
            if r == DISABLE_NEEDS_RESTART and (cfg.hw_offload or api.enabled is False):
                continue  # re-enabled since, or the daemon shows it is off after all
            if r == TC_POLICY_NEEDS_RESTART and api.enabled is False:
                continue
            if r not in reasons:
                reasons.append(r)
        out = list(findings)
        if reasons:
            out.append(
                Finding(
                    check="offload.restart_required",
                    severity="warning",
                    message="ovs-vswitchd must restart for the offload settings to take effect",
                    evidence="; ".join([*reasons, api.evidence]),
                    fix="sriovctl offload-enable/-disable --host <host> --allow-restart, or "
                    "systemctl restart ovs-vswitchd",
                )
            )
        return OffloadStatus(
            host_id=self.host_id,
            hw_offload=cfg.hw_offload,
            tc_policy=cfg.tc_policy,
            max_idle_ms=cfg.max_idle_ms,
            restart_required=bool(reasons),
            restart_reasons=reasons,
            flow_api=api.enabled,
            ovs_version=cfg.ovs_version or version.rsplit(" ", 1)[-1],
            datapath_types=cfg.datapath_types,
            applied=cfg.cur_cfg >= cfg.next_cfg,
            findings=out,
        )


def _validate(req: OffloadSetRequest) -> dict[str, str]:
    updates = {HW_OFFLOAD: "true" if req.hw_offload else "false"}
    if req.tc_policy is not None:
        if req.tc_policy not in TC_POLICIES:
            raise InvalidRequest(
                f"tc_policy {req.tc_policy!r} is not one of {', '.join(TC_POLICIES)}",
                field="tc_policy",
            )
        updates[TC_POLICY] = req.tc_policy
    if req.max_idle_ms is not None:
        if req.max_idle_ms < MIN_MAX_IDLE_MS:
            raise InvalidRequest(
                f"max_idle_ms {req.max_idle_ms} is below OVS's minimum of {MIN_MAX_IDLE_MS} ms",
                field="max_idle_ms",
            )
        updates[MAX_IDLE] = str(req.max_idle_ms)
    return updates


def _not_applied() -> Finding:
    return Finding(
        check="offload.not_applied",
        severity="warning",
        message="ovs-vswitchd has not applied the new settings yet",
        evidence="Open_vSwitch cur_cfg is still below next_cfg",
        fix="check that ovs-vswitchd is running and not stuck (its log, ovs-appctl version)",
    )
