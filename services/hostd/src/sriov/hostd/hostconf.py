"""host.conf: the guide's keys (``networks``, ``sriov_nics``, ``ovs_offload_nics``,
``disable_security_group``) plus hostd's own (host id, desired VF counts, paths) and the
NATS keys of ``BusSettings``.

The guide's format is kept as operators write it: a network is ``ifname/bridge/ip-or-wire``;
a NIC in ``sriov_nics`` that is not in ``networks`` takes the first network's wire; a bond in
``ovs_offload_nics`` stands for its member PFs. Every error names ``file:line: key: problem``.

``host_id`` may be left out (the guide's file has none): it then defaults to a stable id of the
machine derived from ``/etc/machine-id`` (:func:`machine_host_id`), the same for hostd and
offload, and for a pod that mounts the host's file read-only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from sriov.common.config import PathKey, convert, load_yaml, locate
from sriov.common.errors import ConfigError
from sriov.common.runtime import BusSettings

DEFAULT_SYSFS = "/sys"
_IFNAME = re.compile(r"^[^\s/:]{1,15}$")
_WIRE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_PCI = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_HOST_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MACHINE_ID_FILE = "/etc/machine-id"
#: Keys the machine id into an id of this application (systemd's app-specific ids do the
#: same): the machine id itself stays private, as machine-id(5) asks.
_APP_ID = b"sriov-control-plane host_id v1"
_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")


def machine_host_id(path: str | Path = MACHINE_ID_FILE) -> str:
    """A stable host id derived from the machine id in ``path``: a UUID, the same on every
    start and for every daemon of the host, different on every machine."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"host_id is not set and {path} cannot be read ({exc.strerror or exc}): set "
            f"host_id in host.conf, or mount the host's {MACHINE_ID_FILE} read-only",
            file=str(path),
        ) from exc
    if not _MACHINE_ID.match(text):
        raise ConfigError(
            f"host_id is not set and {path} holds no machine id (32 hex digits): set host_id "
            "in host.conf, or run systemd-machine-id-setup",
            file=str(path),
        )
    digest = hmac.new(bytes.fromhex(text), _APP_ID, hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


class Network(msgspec.Struct, frozen=True, kw_only=True):
    """One ``networks`` entry: ``eth1/br0/192.168.100.111`` or ``eth2/br1/bcast1``."""

    ifname: str
    bridge: str
    ip: str | None = None
    """The NIC's address; the controller finds its wire from it."""
    wire: str | None = None
    """The layer-2 network the NIC sits on, for NICs without an address."""

    @property
    def target(self) -> str:
        """The third field as written (the IP address or the wire)."""
        return self.ip or self.wire or ""

    def __str__(self) -> str:
        return f"{self.ifname}/{self.bridge}/{self.target}"


class HostConf(BusSettings, kw_only=True):
    """Everything hostd reads from host.conf. Unknown keys are errors (typos show up).

    The NATS keys are ``BusSettings``' own (``nats_url``, ``nats_creds``...): those the file
    gives override ``SRIOV_*`` variables, and command-line options override both."""

    host_id: str = ""
    """Stable id of this host in the fleet (the guide's ``Host_id``); left out, derived from
    ``machine_id_file`` (:func:`machine_host_id`)."""
    machine_id_file: str = MACHINE_ID_FILE
    """Where the machine id is read from when ``host_id`` is left out (in a pod: the host's
    file, mounted read-only)."""
    hostname: str | None = None
    networks: list[Network] = msgspec.field(default_factory=list)
    sriov_nics: list[str] = msgspec.field(default_factory=list)
    ovs_offload_nics: list[str] = msgspec.field(default_factory=list)
    disable_security_group: bool = False
    """The guide's setting: must be true for OVS offload on ConnectX-6 and older."""
    num_vfs: dict[str, int] = msgspec.field(default_factory=dict)
    """Desired VF count per PF (ifname or PCI address); absent PFs are left as they are."""
    management_ip: str | None = None
    """The host's management address: a PF carrying it (or the default route) is never
    reconfigured."""
    # where to look (command-line options win)
    sysfs_root: str = DEFAULT_SYSFS
    netns: str | None = None
    """Network namespace holding the PF and VF netdevs (None: hostd's own)."""
    pci_ids: str | None = None
    """pci.ids file (default: the system's hwdata)."""
    cmdline_file: str = "/proc/cmdline"
    kmsg_file: str | None = None
    """Kernel log as text (default: read /dev/kmsg)."""
    cpuinfo_file: str = "/proc/cpuinfo"
    """CPU vendor, the doctor's last hint for which IOMMU flag to suggest (a copied or
    simulated host has its own)."""
    # timing
    heartbeat_interval_s: float = 10.0
    resync_interval_s: float = 300.0
    link_holddown_s: float = 0.5
    """Link flaps inside this window after a published change are coalesced into one."""
    rescan_delay_s: float = 0.1
    """Netdevs appearing/disappearing within this delay cause one rescan."""

    def network_of(self, ifname: str, bond: str | None = None) -> tuple[Network | None, bool]:
        """The ``networks`` entry serving ``ifname`` (or its bond), and whether inherited.

        A NIC not in ``networks`` takes the first network's wire (the guide's rule for
        ``sriov_nics``, and the way InfiniBand NICs are configured).
        """
        for net in self.networks:
            if net.ifname == ifname or (bond is not None and net.ifname == bond):
                return net, False
        return (self.networks[0], True) if self.networks else (None, False)

    def desired_vfs(self, ifname: str | None, pci_address: str) -> int | None:
        if ifname is not None and ifname in self.num_vfs:
            return self.num_vfs[ifname]
        return self.num_vfs.get(pci_address)


@dataclass(frozen=True)
class ConfiguredPf:
    """A PF netdev hostd manages, with why (sriov and/or offload) and its bond."""

    ifname: str
    sriov: bool
    offload: bool
    bond: str | None = None


def load_host_conf(path: str | Path) -> HostConf:
    """Read and validate host.conf; raise ConfigError ``file:line: key: problem``."""
    return read_host_conf(path)[0]


def read_host_conf(path: str | Path) -> tuple[HostConf, dict[str, Any]]:
    """host.conf, and the ``BusSettings`` keys it gives (they override the environment)."""
    try:
        data, lines = load_yaml(path)
        conf = parse_host_conf(data, str(path), lines)
    except RecursionError:  # `a: &x [*x]`: an alias inside itself
        raise ConfigError(
            f"{path}: not valid here: a YAML alias refers to itself (recursive structure)",
            file=str(path),
        ) from None
    given = data if isinstance(data, dict) else {}
    return conf, {k: getattr(conf, k) for k in BusSettings.__struct_fields__ if k in given}


def parse_host_conf(data: Any, source: str, lines: Mapping[PathKey, int] | None = None) -> HostConf:
    lines = lines or {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: (top level): expected a mapping of keys")
    data = dict(data)
    nets = data.get("networks")
    if isinstance(nets, list):
        data["networks"] = [
            _parse_network(item, source, lines, ("networks", i)) for i, item in enumerate(nets)
        ]
    wanted = data.get("num_vfs")
    if isinstance(wanted, dict):  # msgspec reports dict values as `[...]`: name the key here
        for key, count in wanted.items():
            if not isinstance(count, int) or isinstance(count, bool):
                problem = f"expected a VF count, got {count!r}"
                raise _err(source, lines, ("num_vfs", str(key)), problem)
    conf = convert(data, HostConf, source=source, lines=lines)
    if not conf.host_id and "host_id" not in data:
        conf.host_id = machine_host_id(conf.machine_id_file)
    _validate(conf, source, lines)
    return conf


def _err(source: str, lines: Mapping[PathKey, int], path: PathKey, problem: str) -> ConfigError:
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return ConfigError(f"{locate(source, lines, path)}: {key}: {problem}", file=source, key=key)


def _parse_network(
    item: Any, source: str, lines: Mapping[PathKey, int], path: PathKey
) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if not isinstance(item, str):
        raise _err(source, lines, path, f"expected 'ifname/bridge/ip-or-wire', got {item!r}")
    parts = item.split("/")
    if len(parts) != 3 or not all(p.strip() for p in parts):
        raise _err(
            source,
            lines,
            path,
            f"{item!r} is not 'ifname/bridge/ip-or-wire' (e.g. eth1/br0/192.168.100.111 "
            "or eth2/br1/bcast1)",
        )
    ifname, bridge, third = (p.strip() for p in parts)
    try:
        return {"ifname": ifname, "bridge": bridge, "ip": str(ipaddress.ip_address(third))}
    except ValueError:
        return {"ifname": ifname, "bridge": bridge, "wire": third}


def _validate(conf: HostConf, source: str, lines: Mapping[PathKey, int]) -> None:
    def fail(path: PathKey, problem: str) -> ConfigError:
        return _err(source, lines, path, problem)

    if not _HOST_ID.match(conf.host_id):
        raise fail(("host_id",), "use 1-128 characters from A-Z a-z 0-9 - _ (e.g. a UUID)")
    seen: set[str] = set()
    for i, net in enumerate(conf.networks):
        where = ("networks", i)
        for name in (net.ifname, net.bridge):
            if not _IFNAME.match(name):
                raise fail(where, f"{name!r} is not a valid interface name")
        if net.ip is None and net.wire is None:
            raise fail(where, "needs an ip or a wire")
        if net.ip is not None:
            try:
                ipaddress.ip_address(net.ip)
            except ValueError:
                raise fail(where, f"{net.ip!r} is not an IP address") from None
        if net.wire is not None and not _WIRE.match(net.wire):
            raise fail(where, f"wire {net.wire!r} may hold only A-Z a-z 0-9 _ . -")
        if net.ifname in seen:
            raise fail(where, f"{net.ifname} is listed twice")
        seen.add(net.ifname)
    for key in ("sriov_nics", "ovs_offload_nics"):
        names: list[str] = getattr(conf, key)
        for i, name in enumerate(names):
            if not _IFNAME.match(name):
                raise fail((key, i), f"{name!r} is not a valid interface name")
            if name in names[:i]:
                raise fail((key, i), f"{name} is listed twice")
    for name, count in conf.num_vfs.items():
        if not (_IFNAME.match(name) or _PCI.match(name)):
            raise fail(("num_vfs", name), "key must be a PF ifname or PCI address")
        if count < 0:
            raise fail(("num_vfs", name), f"VF count must be 0 or more, got {count}")
    if conf.management_ip is not None:
        try:
            ipaddress.ip_address(conf.management_ip)
        except ValueError:
            raise fail(("management_ip",), f"{conf.management_ip!r} is not an IP address") from None
    for key in ("heartbeat_interval_s", "resync_interval_s"):
        if getattr(conf, key) <= 0:
            raise fail((key,), "must be greater than 0")
    for key in ("link_holddown_s", "rescan_delay_s"):
        if getattr(conf, key) < 0:
            raise fail((key,), "must be 0 or more")


# --- bonds ------------------------------------------------------------------------------------
def bond_members(sysfs_root: str | Path, ifname: str) -> list[str] | None:
    """Member netdevs of bond ``ifname`` (sysfs ``bonding/slaves``), or None if not a bond."""
    slaves = Path(sysfs_root) / "class" / "net" / ifname / "bonding" / "slaves"
    try:
        return slaves.read_text().split()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {slaves}: {exc.strerror}", file=str(slaves)) from exc


def expand_nics(names: list[str], sysfs_root: str | Path) -> list[tuple[str, str | None]]:
    """``[(pf_ifname, bond_or_None)]`` with each bond replaced by its members, in order."""
    out: list[tuple[str, str | None]] = []
    for name in names:
        members = bond_members(sysfs_root, name)
        if members is None:
            out.append((name, None))
        else:
            out.extend((m, name) for m in members)
    unique: dict[str, str | None] = {}
    for name, bond in out:
        unique.setdefault(name, bond)
    return list(unique.items())


def offload_pfs(conf: HostConf, sysfs_root: str | Path | None = None) -> list[str]:
    """PF ifnames OVS offload applies to: ``ovs_offload_nics`` with bonds expanded."""
    return [n for n, _ in expand_nics(conf.ovs_offload_nics, sysfs_root or conf.sysfs_root)]


def sriov_pfs(conf: HostConf, sysfs_root: str | Path | None = None) -> list[str]:
    """PF ifnames listed in ``sriov_nics`` (bonds expanded too)."""
    return [n for n, _ in expand_nics(conf.sriov_nics, sysfs_root or conf.sysfs_root)]


def configured_pfs(conf: HostConf, sysfs_root: str | Path | None = None) -> list[ConfiguredPf]:
    """Every PF netdev hostd manages: ``sriov_nics`` then offload-only ones."""
    root = sysfs_root or conf.sysfs_root
    sriov = expand_nics(conf.sriov_nics, root)
    offload = dict(expand_nics(conf.ovs_offload_nics, root))
    out = [ConfiguredPf(n, True, n in offload, bond or offload.get(n)) for n, bond in sriov]
    names = {p.ifname for p in out}
    out += [ConfiguredPf(n, False, True, b) for n, b in offload.items() if n not in names]
    return out
