"""The offload agent: its three endpoints, its audit loop and the events it publishes.

* ``offloadcmd.<host>.get`` / ``set`` -> :class:`OffloadStatus`; ``audit`` -> :class:`Audit`.
* Events (JetStream): an audit after every run (interval or on demand); the config when the
  hw-offload settings or the restart state change -- including changes made by hand with
  ovs-vsctl, which the OVSDB replica sees; the NIC checks when their findings change.
* When OVSDB or ovs-vswitchd is down every endpoint answers ``unavailable`` naming the
  socket; the loops log, keep going and pick up again when the daemons return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sriov.common import subjects, telemetry
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import SriovError, Unavailable
from sriov.common.schemas import (
    Audit,
    AuditRequest,
    Finding,
    OffloadChecks,
    OffloadConfigChanged,
    OffloadGetRequest,
    OffloadSetRequest,
    OffloadStatus,
)
from sriov.offload.audit import DatapathDump, build_audit
from sriov.offload.control import OffloadControl
from sriov.offload.flows import parse_dump
from sriov.offload.ovsdb import OvsConfig, Ovsdb
from sriov.offload.topology import NicChecker, Topology
from sriov.offload.unixctl import UnixctlError
from sriov.offload.vswitchd import Vswitchd

log = logging.getLogger(__name__)


def _finding_key(f: Finding) -> tuple[str, str, str | None, str]:
    return f.check, f.severity, f.device, f.message


class OffloadService:
    def __init__(
        self,
        host_id: str,
        bus: Bus,
        ovsdb: Ovsdb,
        vswitchd: Vswitchd,
        control: OffloadControl,
        checker: NicChecker,
        *,
        audit_interval: float = 30.0,
        meter: Meter | None = None,
    ) -> None:
        self.host_id = host_id
        self.bus = bus
        self.ovsdb = ovsdb
        self.vswitchd = vswitchd
        self.control = control
        self.checker = checker
        self.audit_interval = audit_interval
        self.last_audit: Audit | None = None
        self._last_config: tuple[Any, ...] | None = None
        self._last_checks: list[tuple[str, str, str | None, str]] | None = None
        self._config_changed = asyncio.Event()
        self._audit_lock = asyncio.Lock()
        self._metrics(meter or telemetry.meter())

    # --- wiring -----------------------------------------------------------------------------
    async def register(self, service: ServiceHost) -> None:
        group = subjects.offloadcmd_group(self.host_id)
        await service.add_endpoint(group, "get", OffloadGetRequest, self.on_get)
        await service.add_endpoint(group, "set", OffloadSetRequest, self.on_set)
        await service.add_endpoint(group, "audit", AuditRequest, self.on_audit)
        self.ovsdb.on_change(self._on_ovsdb_change)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish checks once, then audit every ``audit_interval`` and follow config changes."""
        watcher = asyncio.create_task(self._config_loop(stop), name="offload config watcher")
        try:
            await self._guard("NIC checks", self.publish_checks())
            while not stop.is_set():
                await self._guard("audit", self.audit())
                await self._guard("NIC checks", self.publish_checks())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.audit_interval):
                        await stop.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _guard(self, what: str, coro: Any) -> None:
        """Run one periodic step; a daemon being down is logged, never fatal."""
        try:
            await coro
        except Unavailable as exc:
            log.warning("%s skipped: %s", what, exc)
        except SriovError as exc:
            log.error("%s failed: %s", what, exc)
        except Exception as exc:  # e.g. a NATS error while the cluster elects a stream leader
            log.exception("%s failed unexpectedly (will retry next round): %s", what, exc)

    # --- endpoints --------------------------------------------------------------------------
    async def on_get(self, _msg: OffloadGetRequest, _headers: Mapping[str, str]) -> OffloadStatus:
        topo = await self.checker.run()
        status = await self.control.status(topo.findings)
        status.findings.extend(_config_findings(status, topo))
        await self._maybe_publish_config(status)
        return status

    async def on_set(self, msg: OffloadSetRequest, _headers: Mapping[str, str]) -> OffloadStatus:
        topo = await self.checker.run()
        status = await self.control.set(msg, topo.findings)
        status.findings.extend(_config_findings(status, topo))
        await self._maybe_publish_config(status)
        return status

    async def on_audit(self, msg: AuditRequest, _headers: Mapping[str, str]) -> Audit:
        return await self.audit(msg.top)

    # --- audit ------------------------------------------------------------------------------
    async def audit(self, top: int = 10) -> Audit:
        """Dump every datapath, count, publish the audit event, return it."""
        async with self._audit_lock:
            started = time.perf_counter()
            cfg = await self.ovsdb.read()
            dumps = []
            for dp in await self.vswitchd.datapaths():
                try:
                    text = await self.vswitchd.dump_flows(dp)
                except UnixctlError as exc:
                    log.warning("dump-flows %s failed: %s", dp, exc)
                    continue
                dumps.append(DatapathDump(dp, parse_dump(text, datapath=dp)))
            port_pf = self.checker.port_map(self.checker.offload_nics())
            audit = build_audit(self.host_id, cfg.hw_offload, dumps, port_pf=port_pf, top=top)
            audit.duration_ms = (time.perf_counter() - started) * 1000
            self.last_audit = audit
        await self.bus.js_publish(subjects.offload_audit(self.host_id), audit)
        return audit

    # --- events -----------------------------------------------------------------------------
    async def publish_checks(self) -> None:
        topo = await self.checker.run()
        key = sorted(_finding_key(f) for f in topo.findings)
        if key == self._last_checks:
            return
        await self.bus.js_publish(
            subjects.offload_checks(self.host_id),
            OffloadChecks(host_id=self.host_id, findings=topo.findings),
        )
        self._last_checks = key

    def _on_ovsdb_change(self, cfg: OvsConfig | None) -> None:
        if cfg is not None:
            self._config_changed.set()

    async def _config_loop(self, stop: asyncio.Event) -> None:
        """After an OVSDB change (by anyone), publish the status if the view changed."""
        while not stop.is_set():
            await self._config_changed.wait()
            self._config_changed.clear()
            await asyncio.sleep(0.2)  # let ovs-vswitchd apply the change before we look
            try:
                status = await self.control.status()
            except SriovError as exc:
                log.warning("config change seen but status unavailable: %s", exc)
                continue
            await self._guard("config event", self._maybe_publish_config(status))

    async def _maybe_publish_config(self, status: OffloadStatus) -> None:
        view = (status.hw_offload, status.tc_policy, status.max_idle_ms, status.restart_required,
                tuple(status.restart_reasons))  # fmt: skip
        if view == self._last_config:
            return
        self._last_config = view
        await self.bus.js_publish(
            subjects.offload_config(self.host_id),
            OffloadConfigChanged(host_id=self.host_id, status=status),
        )

    # --- metrics ----------------------------------------------------------------------------
    def _metrics(self, meter: Meter) -> None:
        attrs = {"host_id": self.host_id}

        def ratio(_options: CallbackOptions) -> list[Observation]:
            a = self.last_audit
            return [Observation(a.ratio, attrs)] if a is not None else []

        def flows(_options: CallbackOptions) -> list[Observation]:
            a = self.last_audit
            if a is None:
                return []
            return [
                Observation(a.offloaded, {**attrs, "state": "offloaded"}),
                Observation(a.partial, {**attrs, "state": "partial"}),
                Observation(a.not_offloaded, {**attrs, "state": "not_offloaded"}),
            ]

        meter.create_observable_gauge(
            "sriov.offload.flow_ratio",
            callbacks=[ratio],
            unit="1",
            description="Offloaded datapath flows / all datapath flows, per host",
        )
        meter.create_observable_gauge(
            "sriov.offload.flows",
            callbacks=[flows],
            unit="{flow}",
            description="Datapath flows by offload state, per host",
        )


def _config_findings(status: OffloadStatus, topo: Topology) -> list[Finding]:
    if topo.offload_nics and not status.hw_offload:
        return [
            Finding(
                check="offload.hw_offload_off",
                severity="warning",
                message="host.conf lists ovs_offload_nics but OVS hw-offload is off",
                evidence=f"ovs_offload_nics={topo.offload_nics}; other_config:hw-offload "
                "is not true",
                fix="sriovctl offload-enable --host <host> once the NIC checks pass",
            )
        ]
    return []
