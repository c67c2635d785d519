"""A private, real Open vSwitch: ovsdb-server and ovs-vswitchd in a temporary directory.

Nothing touches a system-wide OVS: the database file, sockets, pidfiles and logs live in the
sandbox directory, ``OVS_RUNDIR`` points there (bridges' ``.mgmt`` sockets), and
ovs-vswitchd runs inside a network namespace of its own, so its tap devices
(``ovs-netdev``, bridge ports) cannot clash with another sandbox or a real OVS. Daemons run
``--detach`` with pidfiles, so any process (a test, the lead's demo, a restart command run by
the agent) can stop or restart them knowing only the directory::

    sb = OvsSandbox(tmp_path / "ovs").start()
    sb.add_bridge("br0")                      # datapath_type=netdev
    a = sb.add_host_port("br0", "p1", "10.9.0.1/24")
    ...
    sb.stop()                                 # daemons, namespaces, veths: all gone

Setup writes (root row, bridges, ports) go through the OVS Python IDL like any OVSDB client;
:meth:`vsctl` runs ``ovs-vsctl --db=unix:...`` for tests to read values back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ovs.db.idl
import ovs.poller

from sriov.offload.testing import netns

SCHEMA_PATHS = ("/usr/share/openvswitch/vswitch.ovsschema",)
STATE_FILE = "sandbox.json"


class SandboxError(RuntimeError):
    """An OVS daemon would not start or a setup transaction failed (with its log's tail)."""


@dataclass
class Endpoint:
    """A veth whose one end is an OVS port and whose other end sits in its own namespace."""

    port: str
    """The OVS port (in the sandbox namespace)."""
    netns: str
    """Namespace of the far end."""
    ifname: str
    ip: str
    """Address with prefix (``10.9.0.1/24``)."""

    @property
    def address(self) -> str:
        return self.ip.split("/", 1)[0]


def schema_path() -> str:
    for p in SCHEMA_PATHS:
        if Path(p).is_file():
            return p
    raise SandboxError(
        f"Open vSwitch schema not found in {SCHEMA_PATHS}: apt-get install openvswitch-switch"
    )


class OvsSandbox:
    def __init__(self, directory: str | Path, *, ns: str | None = None) -> None:
        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self._load_state()
        self.netns: str = ns or state.get("netns") or f"sriov-ovs-{secrets.token_hex(3)}"
        self.namespaces: list[str] = list(state.get("namespaces", []))
        self.db_file = self.dir / "conf.db"
        self.db_sock = str(self.dir / "db.sock")
        self.ctl_sock = str(self.dir / "vswitchd.ctl")
        self.ovsdb_ctl = str(self.dir / "ovsdb.ctl")
        self.db_pidfile = self.dir / "ovsdb.pid"
        self.vswitchd_pidfile = self.dir / "vswitchd.pid"
        self.db_log = self.dir / "ovsdb.log"
        self.vswitchd_log = self.dir / "vswitchd.log"

    @property
    def db_remote(self) -> str:
        return f"unix:{self.db_sock}"

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> OvsSandbox:
        """Create the database if needed, start both daemons; returns self."""
        try:
            if not self.db_file.exists():
                self._run(["ovsdb-tool", "create", str(self.db_file), schema_path()])
            self.start_ovsdb()
            self._init_root()
            self.start_vswitchd()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both daemons and delete every namespace (and so every veth) it made."""
        self.stop_vswitchd()
        self.stop_ovsdb()
        for ns in [*self.namespaces, self.netns]:
            netns.delete(ns)
        self.namespaces.clear()
        self._save_state()

    def __enter__(self) -> OvsSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_ovsdb(self) -> None:
        self._daemon(
            [
                "ovsdb-server",
                str(self.db_file),
                f"--remote=punix:{self.db_sock}",
                f"--unixctl={self.ovsdb_ctl}",
                f"--pidfile={self.db_pidfile}",
                f"--log-file={self.db_log}",
                "--detach",
                "--no-chdir",
                "-vconsole:off",
            ],
            self.db_log,
        )
        _wait_for(lambda: os.path.exists(self.db_sock), 10, f"{self.db_sock} to appear")

    def start_vswitchd(self) -> None:
        """Start ovs-vswitchd in the sandbox namespace; returns once it serves its socket."""
        netns.create(self.netns)
        self._save_state()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.ctl_sock)  # a stale socket from a killed daemon
        self._daemon(
            [
                "ip", "netns", "exec", self.netns,
                "ovs-vswitchd",
                f"unix:{self.db_sock}",
                f"--unixctl={self.ctl_sock}",
                f"--pidfile={self.vswitchd_pidfile}",
                f"--log-file={self.vswitchd_log}",
                "--disable-system",
                "--detach",
                "--no-chdir",
                "-vconsole:off",
            ],
            self.vswitchd_log,
        )  # fmt: skip
        _wait_for(lambda: os.path.exists(self.ctl_sock), 10, f"{self.ctl_sock} to appear")

    def stop_ovsdb(self) -> None:
        _terminate(self.db_pidfile)

    def stop_vswitchd(self) -> None:
        _terminate(self.vswitchd_pidfile)

    def kill_ovsdb(self) -> None:
        """SIGKILL ovsdb-server (its socket file stays behind, as after a crash)."""
        _terminate(self.db_pidfile, signal.SIGKILL)

    def kill_vswitchd(self) -> None:
        """SIGKILL ovs-vswitchd (its control socket file stays behind, as after a crash)."""
        _terminate(self.vswitchd_pidfile, signal.SIGKILL)

    def restart_vswitchd(self) -> None:
        self.stop_vswitchd()
        self.start_vswitchd()

    def pid(self, which: str) -> int | None:
        pidfile = self.vswitchd_pidfile if which == "vswitchd" else self.db_pidfile
        return _read_pid(pidfile)

    # --- setup through OVSDB ----------------------------------------------------------------
    def add_bridge(self, name: str, datapath_type: str = "netdev") -> None:
        def change(idl: ovs.db.idl.Idl, txn: ovs.db.idl.Transaction) -> None:
            iface = txn.insert(idl.tables["Interface"])
            iface.name, iface.type = name, "internal"
            port = txn.insert(idl.tables["Port"])
            port.name, port.interfaces = name, [iface]
            br = txn.insert(idl.tables["Bridge"])
            br.name, br.ports, br.datapath_type = name, [port], datapath_type
            _root(idl).addvalue("bridges", br)

        self._transact(change, check_interfaces=[name])

    def add_port(self, bridge: str, name: str) -> None:
        def change(idl: ovs.db.idl.Idl, txn: ovs.db.idl.Transaction) -> None:
            br = _find(idl, "Bridge", bridge)
            iface = txn.insert(idl.tables["Interface"])
            iface.name = name
            port = txn.insert(idl.tables["Port"])
            port.name, port.interfaces = name, [iface]
            br.addvalue("ports", port)

        self._transact(change, check_interfaces=[name])

    def set_other_config(self, key: str, value: str | None) -> None:
        """Set (or with None delete) ``Open_vSwitch . other_config:key`` as another OVSDB
        client would (an operator, ovs-vsctl), and wait for ovs-vswitchd to apply it."""

        def change(idl: ovs.db.idl.Idl, txn: ovs.db.idl.Transaction) -> None:
            root = _root(idl)
            if value is None:
                root.delkey("other_config", key)
            else:
                root.setkey("other_config", key, value)

        self._transact(change)

    def add_host_port(self, bridge: str, port: str, ip: str) -> Endpoint:
        """A veth: ``port`` on ``bridge`` in the sandbox namespace, its peer (with ``ip``) in
        a new namespace of its own, both up; the peer can then send real traffic."""
        peer_ns = f"{self.netns}-{port}"[:48]
        netns.create(peer_ns)
        self.namespaces.append(peer_ns)
        self._save_state()
        peer = "eth0"
        netns.add_veth(self.netns, port, peer_ns, peer, ip)
        self.add_port(bridge, port)
        return Endpoint(port=port, netns=peer_ns, ifname=peer, ip=ip)

    # --- read back (tests) ------------------------------------------------------------------
    def vsctl(self, *args: str) -> str:
        """``ovs-vsctl --db=unix:<sandbox>`` for tests to READ values back."""
        return self._run(["ovs-vsctl", f"--db={self.db_remote}", "--no-wait", *args]).strip()

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", "-t", self.ctl_sock, *args])

    # --- internals --------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR", "OVS_PKGDATADIR"):
            env[var] = str(self.dir)
        env["OVS_PKGDATADIR"] = "/usr/share/openvswitch"
        return env

    def _run(self, argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(), timeout=30)
        if proc.returncode != 0:
            raise SandboxError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    def _daemon(self, argv: list[str], log: Path) -> None:
        try:
            self._run(argv)
        except (SandboxError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"{exc}\n--- {log} ---\n{_tail(log)}") from exc

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        state = {"netns": self.netns, "namespaces": self.namespaces}
        (self.dir / STATE_FILE).write_text(json.dumps(state))

    def _init_root(self) -> None:
        def change(idl: ovs.db.idl.Idl, txn: ovs.db.idl.Transaction) -> None:
            if not idl.tables["Open_vSwitch"].rows:
                txn.insert(idl.tables["Open_vSwitch"])

        self._transact(change, wait_applied=False)

    def _transact(
        self,
        change: Callable[[ovs.db.idl.Idl, ovs.db.idl.Transaction], None],
        *,
        wait_applied: bool = True,
        check_interfaces: list[str] = (),  # type: ignore[assignment]
        timeout: float = 15,
    ) -> None:
        """One IDL transaction, then (like ovs-vsctl) wait for ovs-vswitchd to apply it."""
        helper = ovs.db.idl.SchemaHelper(location=schema_path())
        for table in ("Open_vSwitch", "Bridge", "Port", "Interface"):
            helper.register_table(table)
        idl = ovs.db.idl.Idl(self.db_remote, helper)
        try:
            _pump(idl, idl.has_ever_connected, timeout, f"OVSDB at {self.db_sock}")
            txn = ovs.db.idl.Transaction(idl)
            change(idl, txn)
            if wait_applied:
                _root(idl).increment("next_cfg")
            status = txn.commit_block()
            if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                raise SandboxError(f"OVSDB transaction failed: {status} {txn.get_error()}")
            if wait_applied and status == ovs.db.idl.Transaction.SUCCESS:
                target = txn.get_increment_new_value()
                _pump(idl, lambda: _root(idl).cur_cfg >= target, timeout, "ovs-vswitchd to apply")
            for name in check_interfaces:
                error = _find(idl, "Interface", name).error
                if error:
                    raise SandboxError(f"interface {name}: {error[0]}\n{_tail(self.vswitchd_log)}")
        finally:
            idl.close()


def _pump(idl: ovs.db.idl.Idl, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        idl.run()
        if idl.has_ever_connected() and done():
            return
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout}s waiting for {what}")
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(100)
        poller.block()


def _root(idl: ovs.db.idl.Idl) -> Any:
    return next(iter(idl.tables["Open_vSwitch"].rows.values()))


def _find(idl: ovs.db.idl.Idl, table: str, name: str) -> Any:
    for row in idl.tables[table].rows.values():
        if row.name == name:
            return row
    raise SandboxError(f"no {table} named {name}")


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _terminate(pidfile: Path, sig: signal.Signals = signal.SIGTERM, timeout: float = 10) -> None:
    pid = _read_pid(pidfile)
    if pid is None or not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.02)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def sandbox(directory: str | Path) -> Iterator[OvsSandbox]:
    sb = OvsSandbox(directory).start()
    try:
        yield sb
    finally:
        sb.stop()
