"""The whole system on one machine: what ``sriov-stack up``, the end-to-end tests and the
fault suite run.

NATS (JetStream) and PostgreSQL from the PyPI wheels in a state directory (or ones the caller
gives: the fault suite's 3-node cluster and its restartable PostgreSQL), simulated hosts
(sysfs tree + veth netdevs in a network namespace, the guide's ConnectX-5/I350 host), a
private Open vSwitch for each, and every service as its own process, in a session of its own
so it can be stopped, killed or restarted alone. Logs go to ``<state>/logs`` and, unless
quiet, to stdout prefixed by process; :meth:`Stack.down` stops everything in reverse order
and leaves nothing behind, also after a half-way failure.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sriov.common.bus import Bus
from sriov.common.errors import Unavailable
from sriov.common.runtime import default_instance_id
from sriov.devtools.embedded import NatsServer, PostgresServer, prepare_dir

GUIDE_HOST_ID = "c48b1b8b-28a3-453a-863f-ddf7c62bcfe2"
COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")
STOP_GRACE_S = 15


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    thread: threading.Thread | None = None
    metrics_port: int | None = None
    """Where it serves /metrics, once :meth:`Stack.metrics_port` looked it up."""

    @property
    def instance(self) -> str:
        """Its instance id in service discovery."""
        if "--instance-id" in self.argv:
            return self.argv[self.argv.index("--instance-id") + 1]
        return default_instance_id(self.popen.pid)


@dataclass
class SimHost:
    index: int
    host_id: str
    dir: Path
    netns: str
    ovs_dir: Path

    @property
    def sys_root(self) -> Path:
        return self.dir / "sys"

    @property
    def conf(self) -> Path:
        return self.dir / "host.conf"

    def vf_of(self, pci: str) -> tuple[str, int]:
        """(PF netdev, VF index) of VF ``pci``, from the tree's ``physfn``/``virtfnN`` links."""
        dev = (self.sys_root / "bus" / "pci" / "devices" / pci).resolve()
        pf = (dev / "physfn").resolve()
        index = next(int(v.name[6:]) for v in pf.glob("virtfn*") if v.resolve() == dev)
        return next(n.name for n in (pf / "net").iterdir()), index

    def ip_link_set_vf(self, pci: str, **settings: Any) -> str:
        """Change VF ``pci`` behind hostd's back, as ``ip link set <pf> vf N vlan 7`` does on
        a real PF (through the simulated PF driver); returns that command."""
        from sriov.hostd.simulator import vftable

        pf, vf = self.vf_of(pci)
        vftable.ip_link_set_vf(str(self.sys_root), pf, vf, **settings)
        return f"ip link set {pf} vf {vf} " + " ".join(f"{k} {v}" for k, v in settings.items())

    def inject_fault(self, pci: str, attr: str, err: int | None) -> None:
        """Make the simulated PF driver refuse ``attr`` (``IFLA_VF_MAC``...) on VF ``pci`` with
        ``err`` (None: accept it again), as firmware that cannot reset a VF would."""
        from sriov.hostd.simulator import vftable

        pf, vf = self.vf_of(pci)
        vftable.inject_fault(str(self.sys_root), pf, vf, attr, err)


@dataclass
class Stack:
    state: Path
    replicas: int = 1
    hosts: int = 1
    quiet: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    """Added to every process's environment (tests point ``OTEL_*`` at a collector)."""
    nats_urls: list[str] = field(default_factory=list)
    """NATS to use (e.g. a cluster's nodes); empty: one is started in the state directory."""
    pg: PostgresServer | None = None
    """PostgreSQL to use (the caller may restart it); None: one is started here."""
    stream_replicas: int = 1
    inventory_args: tuple[str, ...] = ()
    audit_interval: int = 10
    offload: bool = True
    """Run each simulated host's offload agent (with its Open vSwitch) when OVS is installed."""
    nats: NatsServer | None = None
    procs: list[Proc] = field(default_factory=list)
    sim_hosts: list[SimHost] = field(default_factory=list)
    _owned: list[NatsServer | PostgresServer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nats_url(self) -> str:
        return ",".join(self.nats_urls)

    # --- bring-up -------------------------------------------------------------------------
    def up(self, nats_port: int = 0, pg_port: int = 0) -> None:
        self._say(f"state directory {self.state}")
        prepare_dir(self.state, "state")
        if not self.nats_urls:
            self.nats = NatsServer(store_dir=self.state / "nats", port=nats_port).start()
            self._owned.append(self.nats)
            self.nats_urls = [self.nats.url]
            self._say(f"NATS with JetStream on {self.nats.url}")
        if self.pg is None:
            self.pg = PostgresServer(data_dir=self.state / "postgres", port=pg_port).start()
            self._owned.append(self.pg)
            self._say(f"PostgreSQL on {self.pg.dsn}")
        (self.state / "stack.json").write_text(
            json.dumps({"nats_url": self.nats_url, "database_url": self.pg.dsn}, indent=2)
        )
        if self.stream_replicas != 1:
            asyncio.run(self._provision())
        for i in range(self.replicas):
            self._spawn(
                f"inventory-{i + 1}",
                ["sriov-inventory", "--instance-id", f"inv-{i + 1}", *self.inventory_args],
            )
            self._spawn(f"scheduler-{i + 1}", ["sriov-scheduler", "--instance-id", f"sch-{i + 1}"])
        for i in range(self.hosts):
            self._start_host(i)

    async def _provision(self) -> None:
        """Create the streams with their replicas before any service starts on one node."""
        bus = await Bus.connect(self.nats_urls, name="stack-provision")
        try:
            await bus.ensure_streams(replicas=self.stream_replicas)
        finally:
            await bus.close()

    def _start_host(self, i: int) -> None:
        host_dir = self.state / f"host{i + 1}"
        # Namespace names are per state directory, so two stacks never touch each other's.
        tag = hashlib.sha1(str(self.state).encode()).hexdigest()[:6]
        sim = SimHost(i, GUIDE_HOST_ID, host_dir, f"sriov-{tag}-h{i + 1}", host_dir / "ovs")
        self.simulate(sim, "--remove", check=False)
        self.simulate(sim, "--spec", "guide", "--write-config", str(sim.conf),
                      "--nats-url", self.nats_url)  # fmt: skip
        if i > 0:  # every further host is the guide's host under another id
            text = sim.conf.read_text().replace(GUIDE_HOST_ID, f"sim-host-{i + 1}")
            sim.conf.write_text(text)
            sim.host_id = f"sim-host-{i + 1}"
        self.sim_hosts.append(sim)
        self._say(f"simulated host {sim.host_id}: sysfs {sim.sys_root}, netns {sim.netns}")
        self._spawn(
            f"hostd-{i + 1}",
            ["sriov-hostd", "run", "--config", str(sim.conf), "--sysfs-root", str(sim.sys_root),
             "--netns", sim.netns, "--cmdline-file", str(self._cmdline(sim))],
        )  # fmt: skip
        if not self.offload:
            return
        if shutil.which("ovsdb-server") and shutil.which("ovs-vswitchd"):
            from sriov.offload.testing.sandbox import OvsSandbox

            sb = OvsSandbox(sim.ovs_dir).start()
            self._say(f"Open vSwitch (userspace) for {sim.host_id} in {sim.ovs_dir}")
            self._spawn(
                f"offload-{i + 1}",
                ["sriov-offload", "--host-id", sim.host_id, "--ovsdb", sb.db_remote,
                 "--vswitchd-ctl", sb.ctl_sock, "--config", str(sim.conf),
                 "--sysfs-root", str(sim.sys_root), "--audit-interval", str(self.audit_interval),
                 "--allow-restart", "--restart-command",
                 f"{sys.executable} -m sriov.offload.testing restart-vswitchd {sim.ovs_dir}"],
            )  # fmt: skip
        else:
            self._say(
                "Open vSwitch is not installed: offload not started (./stack test installs it)"
            )

    def _cmdline(self, sim: SimHost) -> Path:
        """The simulated host boots with IOMMU on, as the guide asks."""
        path = sim.dir / "cmdline"
        path.write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt\n")
        return path

    def env(self) -> dict[str, str]:
        assert self.nats_urls and self.pg is not None
        env = dict(os.environ)
        env.update(
            SRIOV_NATS_URL=self.nats_url,
            SRIOV_DATABASE_URL=self.pg.dsn,
            SRIOV_STREAM_REPLICAS=str(self.stream_replicas),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def _bin(self, name: str) -> str:
        local = Path(sys.executable).parent / name
        return str(local) if local.exists() else name

    def _run(self, argv: list[str], check: bool = True) -> None:
        res = subprocess.run(
            [self._bin(argv[0]), *argv[1:]], env=self.env(), capture_output=True, text=True
        )
        if check and res.returncode != 0:
            raise Unavailable(f"{' '.join(argv[:2])} failed: {res.stderr.strip()[-800:]}")

    def simulate(self, sim: SimHost, *args: str, check: bool = True) -> None:
        """``sriov-hostd simulate`` on a simulated host's sysfs tree and namespace."""
        self._run(["sriov-hostd", "simulate", "--root", str(sim.sys_root),
                   "--netns", sim.netns, *args], check=check)  # fmt: skip

    def set_link(self, ifname: str, up: bool, host: int = 0) -> None:
        """Raise or drop a simulated netdev's carrier (a real netlink event)."""
        self.simulate(self.sim_hosts[host], "--link", f"{ifname}={'up' if up else 'down'}")

    # --- processes ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> Proc:
        env = self.env()
        env.update(
            OTEL_METRICS_EXPORTER="prometheus",
            OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
            # the service binds a free port itself and announces it (metrics_port): a port
            # chosen here was now and then taken, before the service bound it, by a client's
            # outgoing connection (the kernel hands both out from the same range)
            OTEL_EXPORTER_PROMETHEUS_PORT="0",
            OTEL_SERVICE_NAME=f"sriov-{name.rsplit('-', 1)[0]}",
        )
        log = self.state / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:  # quiet: straight to the file, no thread to feed
            popen = subprocess.Popen(
                [self._bin(argv[0]), *argv[1:]], env=env,
                stdout=out if self.quiet else subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, argv, popen)
        if not self.quiet:
            color = COLORS[len(self.procs) % len(COLORS)]
            proc.thread = threading.Thread(
                target=self._pump, args=(proc, color, log), daemon=True, name=name
            )
            proc.thread.start()
        old = [i for i, p in enumerate(self.procs) if p.name == name]
        if old:
            self.procs[old[0]] = proc
        else:
            self.procs.append(proc)
        return proc

    def _pump(self, proc: Proc, color: str, log: Path) -> None:
        assert proc.popen.stdout is not None
        tty = sys.stdout.isatty()
        with open(log, "ab") as out:
            for raw in proc.popen.stdout:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace").rstrip()
                prefix = f"\033[{color}m{proc.name:>12}\033[0m" if tty else f"{proc.name:>12}"
                with self._lock:
                    print(f"{prefix} | {line}", flush=True)

    def _say(self, text: str) -> None:
        with self._lock:
            print(f"{'stack':>12} | {text}", flush=True)

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def wait_announced(self, timeout: float = 120) -> None:
        """Until every process's service answers discovery (``$SRV.INFO``): one still starting
        is not part of the system yet, and a fault injected then catches it mid-start (a NATS
        node killed under offload's announce made it exit, as a start that fails does). Each
        process's metrics port is read from its answer."""
        asyncio.run(self._announced(timeout))

    async def _announced(self, timeout: float) -> None:
        want = collections.Counter(f"sriov-{p.name.rsplit('-', 1)[0]}" for p in self.procs)
        bus = await Bus.connect(self.nats_urls, name="stack-announced")
        try:
            deadline = time.monotonic() + timeout
            while True:
                infos = await bus.discover("INFO", 0.5)
                by_instance = {(i.get("metadata") or {}).get("instance"): i for i in infos}
                for p in self.procs:
                    meta = (by_instance.get(p.instance) or {}).get("metadata") or {}
                    if "metrics_port" in meta:
                        p.metrics_port = int(meta["metrics_port"])
                missing = want - collections.Counter(i["name"] for i in infos)
                if not missing:
                    return
                if dead := [p.name for p in self.dead()]:
                    raise Unavailable(f"processes exited while starting: {dead}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"not announced within {timeout:.0f}s: {dict(missing)}")
        finally:
            await bus.close()

    def metrics_port(self, name: str) -> int:
        """Where a process serves /metrics, as its service announced it."""
        proc = self.proc(name)
        if proc.metrics_port is None:
            # in a thread of its own: the caller may be inside an event loop (async tests)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(self.wait_announced, 60).result()
        if proc.metrics_port is None:
            raise Unavailable(f"{name} announced no metrics port")
        return proc.metrics_port

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a process's session and wait for it (SIGKILL after the grace)."""
        _stop(self.proc(name), sig, time.monotonic() + STOP_GRACE_S)

    def restart(self, name: str) -> Proc:
        """Start a process again with the arguments it had."""
        return self._spawn(name, self.proc(name).argv)

    # --- health and shutdown --------------------------------------------------------------
    def dead(self) -> list[Proc]:
        return [p for p in self.procs if p.popen.poll() is not None]

    def log(self, name: str) -> str:
        return (self.state / "logs" / f"{name}.log").read_text(errors="replace")

    def obituaries(self) -> list[str]:
        """Each dead process with its exit code and the end of its log."""
        return [
            f"{p.name} (exit {p.popen.returncode}): "
            + " | ".join(self.log(p.name).strip().splitlines()[-6:])
            for p in self.dead()
        ]

    def tails(self, lines: int = 4) -> str:
        """The end of every process's log (for a failure message)."""
        return "\n".join(
            f"--- {p.name}: " + " | ".join(self.log(p.name).strip().splitlines()[-lines:])
            for p in self.procs
        )

    def down(self) -> None:
        """Stop services (hosts first), then OVS, namespaces and the servers started here."""
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGCONT)  # a paused one, too
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs:
            _stop(proc, None, deadline)
        for sim in self.sim_hosts:
            if (sim.ovs_dir / "conf.db").exists():
                from sriov.offload.testing.sandbox import OvsSandbox

                with contextlib.suppress(Exception):
                    OvsSandbox(sim.ovs_dir).stop()
            self.simulate(sim, "--remove", check=False)
        for server in reversed(self._owned):
            server.stop()
        with contextlib.suppress(OSError):
            (self.state / "stack.json").unlink()
        self._say("stopped; nothing left running")


def _stop(proc: Proc, sig: int | None, deadline: float) -> None:
    """Signal (unless ``sig`` is None: already sent) and wait; SIGKILL after ``deadline``."""
    if sig is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, sig)
    try:
        proc.popen.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(5)
    if proc.thread is not None:
        proc.thread.join(2)


@contextlib.contextmanager
def running(stack: Stack, nats_port: int = 0, pg_port: int = 0) -> Iterator[Stack]:
    try:
        stack.up(nats_port, pg_port)
        yield stack
    finally:
        stack.down()
