"""The host daemon: discovery, link events, publishing, host commands, config reload.

Start-up: watch links (subscribe, then dump), apply the VF counts host.conf asks for,
discover, publish a full snapshot and the doctor's findings. Then: link changes become
link events; netdevs appearing or disappearing trigger a rescan whose differences are
published as VF/PF events; a full snapshot goes out on every resync interval and whenever
a publish failed; heartbeats say the host is alive and which snapshot is current.

Longer than most modules (~550 lines) because it is the one place that sequences these
loops over shared state; each concern it drives lives in its own module (``discovery``,
``publisher``, ``watcher``, ``lifecycle`` for desired VF state, ``vftables``, ``doctor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sriov.common import runtime, subjects, telemetry
from sriov.common import schemas as m
from sriov.common.bus import Bus, ServiceHost
from sriov.common.errors import ConfigError, InvalidRequest, SriovError
from sriov.hostd import doctor
from sriov.hostd.discovery import Discovery, discover
from sriov.hostd.hostconf import HostConf, load_host_conf
from sriov.hostd.lifecycle import VfLifecycle
from sriov.hostd.links import LinkCoalescer
from sriov.hostd.netview import LinkInfo, NetView
from sriov.hostd.numvfs import set_numvfs
from sriov.hostd.pciids import PciIds
from sriov.hostd.publisher import Publisher
from sriov.hostd.state import Changes, diff
from sriov.hostd.sysfs import Sysfs
from sriov.hostd.vfconfig import VfConfigurator
from sriov.hostd.watcher import LinkWatcher

log = logging.getLogger(__name__)
MAX_SETTLE_RETRIES = 50
OWED_RETRY_S = 0.5  # first retry of an owed snapshot; doubles up to the heartbeat interval
RESCAN_DEFER_MAX_S = 1.0
"""How long a rescan waits for a VF change in progress to end (a busy host still rescans)."""
Spawn = Callable[[Awaitable[Any], str], "asyncio.Task[Any]"]


@dataclass
class Options:
    """Command-line choices that win over host.conf."""

    config_path: Path
    sysfs_root: str | None = None
    netns: str | None = None
    cmdline_file: str | None = None
    kmsg_file: str | None = None
    cpuinfo_file: str | None = None
    netlink: bool = True
    """Watch links over netlink (off only for sysfs-only tests)."""
    watch_config: bool = True


class HostAgent:
    def __init__(
        self,
        bus: Bus,
        conf: HostConf,
        opts: Options,
        *,
        generation: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.bus = bus
        self.conf = conf
        self.opts = opts
        self.sysfs = Sysfs(opts.sysfs_root or conf.sysfs_root)
        self.netns = opts.netns if opts.netns is not None else conf.netns
        self.host_id = conf.host_id
        self.hostname = conf.hostname or socket.gethostname()
        self.publisher = Publisher(bus, conf.host_id, generation)
        self.ids: PciIds | None = None
        self.watcher: LinkWatcher | None = None
        self.links = LinkCoalescer(conf.link_holddown_s, self._emit_link)
        self.state: Discovery | None = None
        self.scans = 0
        self.reloads = 0
        self._scan_lock = asyncio.Lock()
        self._numvfs_lock = asyncio.Lock()
        self._rescan = asyncio.Event()
        self._settling = 0
        self._stop = stop or asyncio.Event()
        """Set when the daemon stops; the file watcher's thread polls it (cancelling an
        anyio worker thread does not interrupt it)."""
        self._reload = asyncio.Event()
        self.vfconfig = VfConfigurator(self.sysfs.root, self.netns)
        self.lifecycle = VfLifecycle(
            bus, self.publisher, self.host_id, self.vfconfig, watched=opts.netlink, stop=self._stop
        )

    @property
    def generation(self) -> int:
        return self.publisher.generation

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self, spawn: Spawn) -> None:
        """Watch, discover, publish the first snapshot, then spawn the loops."""
        if self.opts.watch_config:
            spawn(self._watch_config(), "hostd-config-watch")
            await asyncio.sleep(0)  # the watch is in place before anything is published
        self.ids = await asyncio.to_thread(PciIds, self.conf.pci_ids)
        if self.opts.netlink:
            self.watcher = LinkWatcher(
                self._on_link,
                self._on_topology,
                netns=self.netns,
                on_link=self._on_netlink,
                on_resync=lambda: self.lifecycle.notified(None, table_changed=True),
            )
            await self.watcher.start()
            spawn(self.watcher.run(), "hostd-netlink")
        await self.apply_desired()
        await self.scan(snapshot=True, reason="start")
        await self.publish_diagnostics()
        spawn(self.links.run(), "hostd-links")
        spawn(self._rescan_loop(), "hostd-rescan")
        spawn(self._heartbeat_loop(), "hostd-heartbeat")
        spawn(self._owed_loop(), "hostd-owed-snapshot")
        spawn(self._resync_loop(), "hostd-resync")
        spawn(self._reload_loop(), "hostd-reload")
        spawn(self.lifecycle.watch(), "hostd-vf-drift")
        spawn(self.lifecycle.consume(), "hostd-vf-desired")

    async def register(self, service: ServiceHost) -> None:
        group = subjects.hostcmd_group(self.host_id)
        await service.add_endpoint(group, "rescan", m.RescanRequest, self._cmd_rescan)
        await service.add_endpoint(group, "set-numvfs", m.SetNumVfsRequest, self._cmd_numvfs)
        await service.add_endpoint(group, "doctor", m.DoctorRequest, self._cmd_doctor)

    def close(self) -> None:
        self._stop.set()
        self._rescan.set()  # wake the loops so they see the stop
        self._reload.set()
        self.links.close()
        if self.watcher is not None:
            self.watcher.close()
        self.vfconfig.close()

    def request_reload(self) -> None:
        """SIGHUP: reload host.conf without a restart."""
        self._reload.set()

    # --- discovery and publishing ---------------------------------------------------------------
    async def _net_view(self) -> NetView | None:
        return await self.watcher.view() if self.watcher is not None else None

    async def _discover(self) -> Discovery:
        assert self.ids is not None
        net = await self._net_view()
        return await asyncio.to_thread(discover, self.conf, self.sysfs, self.ids, net)

    async def scan(self, *, snapshot: bool, reason: str) -> Discovery:
        """Rediscover; publish a snapshot (asked for, owed, or structure changed) or diffs."""
        # One trace per discovery: the events it publishes, and their consumers, hang off it.
        attrs = {"sriov.host_id": self.host_id, "sriov.discovery.reason": reason}
        with telemetry.tracer().start_as_current_span("hostd.discovery", attributes=attrs):
            return await self._scan(snapshot=snapshot, reason=reason)

    async def _scan(self, *, snapshot: bool, reason: str) -> Discovery:
        async with self._scan_lock:
            found = await self._discover()
            await self.lifecycle.tables.annotate(found)
            self.scans += 1
            if found.settling and not snapshot and self._settling < MAX_SETTLE_RETRIES:
                # VFs are being created or removed: look again shortly rather than
                # publish a half-made state
                self._settling += 1
                self._rescan.set()
                return self.state or found
            self._settling = 0
            found.errors.extend(found.settling)
            self._overlay_links(found)
            old = self.state
            self.state = found
            self.lifecycle.after_scan(found)
            changes = diff(old, found) if old is not None else None
            if snapshot or changes is None or changes.structural or self.publisher.needs_snapshot:
                log.info(
                    "snapshot (%s): %d PFs, %d VFs, %d errors",
                    reason,
                    len(found.pfs),
                    len(found.vfs),
                    len(found.errors),
                )
                await self.publish_snapshot(found)
            else:
                await self._publish_changes(changes)
            return found

    def _overlay_links(self, found: Discovery) -> None:
        """Report the link state consumers were last told (link events own it)."""
        devices: list[m.PF | m.VF] = [*found.pfs, *found.vfs]
        for dev in devices:
            if dev.ifname is None:
                continue
            told = self.links.published(dev.ifname)
            if told is None:
                self.links.seed(dev.ifname, dev.link_state)
            elif told in ("up", "down", "unknown"):
                dev.link_state = told  # type: ignore[assignment]

    async def publish_snapshot(self, found: Discovery) -> None:
        await self.publisher.publish(
            subjects.host_snapshot(self.host_id),
            m.HostSnapshot,
            hostname=self.hostname,
            pfs=found.pfs,
            vfs=found.vfs,
            errors=found.errors,
        )

    async def _publish_changes(self, ch: Changes) -> None:
        p, h = self.publisher, self.host_id
        for pf in ch.pf_changed:
            await p.publish(subjects.host_pf_changed(h), m.PfChanged, pf=pf)
        for vf in ch.vf_removed:
            await p.publish(
                subjects.host_vf(h, "removed"),
                m.VfRemoved,
                pci_address=vf.pci_address,
                pf_pci_address=vf.pf_pci_address,
            )
        for vf in ch.vf_added:
            await p.publish(subjects.host_vf(h, "discovered"), m.VfDiscovered, vf=vf)
        for vf in ch.vf_changed:
            await p.publish(subjects.host_vf(h, "changed"), m.VfChanged, vf=vf)
        if ch.any:
            log.info("published changes: %s", ch.summary())

    async def publish_diagnostics(self) -> m.Diagnostics:
        findings = await self.run_doctor()
        msg = await self.publisher.publish(
            subjects.host_diagnostics(self.host_id), m.Diagnostics, findings=findings
        )
        if msg is None:  # not published, still answer with what was found
            msg = m.Diagnostics(
                host_id=self.host_id,
                generation=self.generation,
                seq=self.publisher.seq,
                findings=findings,
            )
        return msg

    async def run_doctor(self) -> list[m.Finding]:
        found = self.state or await self._discover()
        return await asyncio.to_thread(self._doctor_sync, found)

    def _doctor_sync(self, found: Discovery) -> list[m.Finding]:
        inputs = doctor_inputs(self.conf, self.sysfs, found, self.opts, self.netns)
        inputs.quarantined = self.lifecycle.evidence()
        return doctor.run(inputs)

    # --- links ----------------------------------------------------------------------------------
    def _on_link(self, info: LinkInfo, prev: LinkInfo | None) -> None:
        if self._role(info.ifname)[0] != "other":
            self.links.observe(info)

    def _on_netlink(self, info: LinkInfo) -> None:
        """Any RTM_NEWLINK: on a PF it may announce a VF-table change (re-read it, check
        drift, publish the VFs' new actual config); on a VF netdev, a change on the VF."""
        _role, dev = self._role(info.ifname)
        if isinstance(dev, m.PF):
            self.lifecycle.notified(dev.pci_address, table_changed=True)
            self._rescan.set()
        elif isinstance(dev, m.VF):
            self.lifecycle.notified(dev.pf_pci_address, table_changed=False)

    def _on_topology(self, ifname: str) -> None:
        # a new or vanished netdev starts afresh: its state comes from the next discovery
        self.links.forget(ifname)
        self._rescan.set()

    def _role(self, ifname: str) -> tuple[str, m.PF | m.VF | None]:
        if self.state is not None:
            for pf in self.state.pfs:
                if pf.ifname == ifname:
                    return "pf", pf
            for vf in self.state.vfs:
                if vf.ifname == ifname:
                    return "vf", vf
        return "other", None

    async def _emit_link(self, info: LinkInfo, flaps: int) -> None:
        role, dev = self._role(info.ifname)
        if dev is not None:
            dev.link_state = info.state  # type: ignore[assignment]
        up = info.state == "up"
        await self.publisher.publish(
            subjects.host_link(self.host_id, up),
            m.LinkChanged,
            ifname=info.ifname,
            state=info.state,
            pci_address=dev.pci_address if dev else None,
            role=role,
            operstate=info.operstate,
            carrier=None if info.carrier is None else bool(info.carrier),
            flaps=flaps,
        )

    # --- loops ----------------------------------------------------------------------------------
    # Each loop also ends when the stop event is set: on Python 3.11 a cancellation can be
    # lost inside asyncio.wait_for (used by the NATS client), so cancel alone may not end it.
    async def _pause(self, seconds: float) -> bool:
        """Sleep; True when the daemon is stopping."""
        return await runtime.pause(self._stop, seconds)

    async def _rescan_loop(self) -> None:
        while not self._stop.is_set():
            await self._rescan.wait()
            if await self._pause(self.conf.rescan_delay_s):  # let a burst settle
                return
            # hostd's own VF change causes most of these notifications: scan once it is
            # done (its outcome carries the actual state) rather than compete with it
            await runtime.pause(self.lifecycle.idle, RESCAN_DEFER_MAX_S)
            async with self._numvfs_lock:  # not half-way through our own VF count change
                self._rescan.clear()
                await self._guarded(self.scan(snapshot=False, reason="netdevs changed"), "rescan")

    async def _owed_loop(self) -> None:
        """A publish failed (NATS away, a stream electing its leader): send the owed snapshot
        as soon as NATS takes it, retrying from 0.5 s up to the heartbeat interval."""
        while True:
            await self.publisher.owed.wait()
            delay = OWED_RETRY_S
            while self.publisher.needs_snapshot:
                if await self._pause(delay):
                    return
                await self._guarded(self.scan(snapshot=True, reason="owed"), "snapshot")
                delay = min(delay * 2, self.conf.heartbeat_interval_s)

    async def _heartbeat_loop(self) -> None:
        # The start-up snapshot is the first proof of life; the heartbeats that follow are
        # spread (at most 1.1 intervals apart, inside inventory's 2-interval allowance)
        beat = runtime.Jitter(f"{self.host_id}/heartbeat/{self.generation}")
        while not await self._pause(beat.delay(self.conf.heartbeat_interval_s)):
            await self.publisher.publish(
                subjects.host_heartbeat(self.host_id),
                m.Heartbeat,
                interval_s=self.conf.heartbeat_interval_s,
                vf_count=len(self.state.vfs) if self.state else 0,
                snapshot_seq=self.publisher.snapshot_seq,
            )

    async def _resync_loop(self) -> None:
        # After a fleet-wide restart every host's resync would otherwise come due together;
        # the start snapshot was a full resync, so the first comes half an interval later at
        # the soonest (a resync right after it published a second snapshot for nothing)
        resync = runtime.Jitter(f"{self.host_id}/resync/{self.generation}", earliest=0.5)
        while not await self._pause(resync.delay(self.conf.resync_interval_s)):
            self.lifecycle.notified(None, table_changed=True)
            await self._guarded(self.scan(snapshot=True, reason="resync interval"), "resync")

    async def _guarded(self, coro: Awaitable[Any], what: str) -> None:
        """A failed scan is logged and retried later; it must not stop the daemon."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s failed: %s", what, exc, exc_info=not isinstance(exc, SriovError))

    # --- config reload --------------------------------------------------------------------------
    async def _reload_loop(self) -> None:
        while not self._stop.is_set():
            await self._reload.wait()
            self._reload.clear()
            if self._stop.is_set():
                return
            await self._guarded(self.reload(), "reload")

    async def _watch_config(self) -> None:
        import watchfiles

        path = self.opts.config_path.resolve()

        def only_conf(_change: Any, changed: str) -> bool:
            return Path(changed).name == path.name

        # not recursive: the directory may also hold a (simulated) sysfs tree
        async for _changes in watchfiles.awatch(
            path.parent,
            watch_filter=only_conf,
            debounce=200,
            step=50,
            recursive=False,
            stop_event=self._stop,
            rust_timeout=1000,
        ):
            self._reload.set()

    async def reload(self) -> bool:
        """Re-read host.conf; on error keep running with the old one and say why."""
        try:
            new = await asyncio.to_thread(load_host_conf, self.opts.config_path)
        except ConfigError as exc:
            log.error("host.conf not reloaded: %s", exc)
            await self._config_finding(str(exc))
            return False
        if new.host_id != self.conf.host_id:
            problem = (
                f"{self.opts.config_path}: host_id: changed from {self.conf.host_id} to "
                f"{new.host_id}; a host id changes only with a restart"
            )
            log.error("host.conf not reloaded: %s", problem)
            await self._config_finding(problem)
            return False
        for key in ("sysfs_root", "netns", "nats_url", "nats_creds", "pci_ids"):
            if getattr(new, key) != getattr(self.conf, key):
                log.warning("host.conf: %s changed; it takes effect at the next restart", key)
        self.conf = new
        self.links.holddown = new.link_holddown_s
        self.reloads += 1
        log.info("host.conf reloaded")
        await self.apply_desired()
        await self.scan(snapshot=False, reason="config reloaded")
        await self.publish_diagnostics()
        return True

    async def _config_finding(self, problem: str) -> None:
        finding = m.Finding(
            check="hostconf.valid",
            severity="error",
            message="host.conf could not be reloaded; the previous configuration stays in effect",
            evidence=problem,
            fix="correct host.conf (the error names file, line and key)",
        )
        await self.publisher.publish(
            subjects.host_diagnostics(self.host_id), m.Diagnostics, findings=[finding]
        )

    # --- VF counts ------------------------------------------------------------------------------
    async def apply_desired(self) -> None:
        """Bring each PF to the VF count host.conf asks for (never a management PF)."""
        if not self.conf.num_vfs:
            return
        found = await self._discover()
        for pf in found.pfs:
            want = self.conf.desired_vfs(pf.ifname, pf.pci_address)
            if want is None or want == pf.num_vfs:
                continue
            try:
                async with self._numvfs_lock:
                    await asyncio.to_thread(set_numvfs, self.sysfs, found, pf.pci_address, want)
            except SriovError as exc:
                log.error("cannot apply num_vfs for %s: %s", pf.ifname, exc)

    # --- endpoints ------------------------------------------------------------------------------
    async def _cmd_rescan(self, req: m.RescanRequest, headers: Mapping[str, str]) -> m.CommandAck:
        found = await self.scan(snapshot=True, reason="rescan requested")
        return m.CommandAck(
            message=f"{len(found.pfs)} PFs, {len(found.vfs)} VFs, {len(found.errors)} errors",
            snapshot_seq=self.publisher.snapshot_seq,
        )

    async def _cmd_numvfs(
        self, req: m.SetNumVfsRequest, headers: Mapping[str, str]
    ) -> m.CommandAck:
        if req.num_vfs < 0:
            raise InvalidRequest(f"num_vfs must be 0 or more, got {req.num_vfs}", field="num_vfs")
        async with self._numvfs_lock:
            found = await self._discover()
            pf = found.pf(req.pf)
            # no VF of the PF changes meanwhile: a restore queued behind the change then finds
            # the recreated VF (or none), never one the kernel is destroying
            async with self.lifecycle.holding(pf.pci_address) if pf else contextlib.nullcontext():
                self.lifecycle.refuse_if_held(found, req.pf, req.force)
                key = pf.pci_address if pf else None
                vfs = [v.pci_address for v in found.vfs if v.pf_pci_address == key]
                # from the first write on, what was applied to them is gone: never "repaired" back
                applied = self.lifecycle.destroyed(vfs)
                try:
                    before, after = await asyncio.to_thread(
                        set_numvfs, self.sysfs, found, req.pf, req.num_vfs
                    )
                except BaseException:
                    self.lifecycle.outcomes.update(applied)
                    raise
                if before != after:
                    await self._recreated(found, req.pf)
                else:
                    self.lifecycle.outcomes.update(applied)
        await self.scan(snapshot=False, reason="numvfs set")
        return m.CommandAck(
            message=f"{req.pf}: {before} -> {after} VFs", snapshot_seq=self.publisher.snapshot_seq
        )

    async def _recreated(self, found: Discovery, key: str) -> None:
        """A VF count change destroyed every VF of the PF (the kernel writes 0 first): each
        is reported removed, so whoever held one learns it, and the next scan discovers the
        new ones."""
        pf = found.pf(key)
        async with self._scan_lock:
            if pf is None or self.state is None:
                return
            gone = [v for v in self.state.vfs if v.pf_pci_address == pf.pci_address]
            self.state.vfs = [v for v in self.state.vfs if v.pf_pci_address != pf.pci_address]
            for vf in gone:
                await self.publisher.publish(
                    subjects.host_vf(self.host_id, "removed"),
                    m.VfRemoved,
                    pci_address=vf.pci_address,
                    pf_pci_address=vf.pf_pci_address,
                )

    async def _cmd_doctor(self, req: m.DoctorRequest, headers: Mapping[str, str]) -> m.Diagnostics:
        await self.scan(snapshot=False, reason="doctor requested")
        return await self.publish_diagnostics()


def doctor_inputs(
    conf: HostConf, sysfs: Sysfs, found: Discovery, opts: Options, netns: str | None
) -> doctor.DoctorInputs:
    return doctor.DoctorInputs(
        conf=conf,
        sysfs=sysfs,
        found=found,
        cmdline=doctor.read_cmdline(opts.cmdline_file or conf.cmdline_file),
        kernel_log=doctor.read_kernel_log(opts.kmsg_file or conf.kmsg_file),
        cpu_vendor=doctor.read_cpu_vendor(opts.cpuinfo_file or conf.cpuinfo_file),
        ip_probe=doctor.ip_probe(netns),
    )


@contextlib.asynccontextmanager
async def running(
    bus: Bus,
    conf: HostConf,
    opts: Options,
    service: ServiceHost | None = None,
    generation: int | None = None,
) -> AsyncIterator[HostAgent]:
    """An agent with its loops running (tests, benchmarks); cancelled on exit."""
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        tasks.append(task)
        return task

    agent = HostAgent(bus, conf, opts, generation=generation)
    try:
        await agent.start(spawn)
        if service is not None:
            await agent.register(service)
        yield agent
    finally:
        agent.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def effective_path(p: str | os.PathLike[str]) -> Path:
    return Path(p).expanduser()
