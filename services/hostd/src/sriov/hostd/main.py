"""``sriov-hostd``: run the host daemon, simulate a host, or diagnose one.

* ``run --config host.conf`` discovers, watches and publishes (see :mod:`sriov.hostd.agent`);
  SIGHUP or an edit of host.conf reloads it without a restart.
* ``simulate --spec guide --root DIR [--netns NS] [--write-config PATH]`` writes a sysfs tree
  (and real veth netdevs) for a host without SR-IOV hardware; ``--remove`` tears it down.
* ``doctor --config host.conf [--json]`` runs every check locally and prints the findings.
* ``discover --config host.conf [-o table|json]`` prints the host id and the PFs, VFs and
  errors hostd would publish, without NATS (what support asks a customer for).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sriov.common import runtime

NAME = "sriov-hostd"
DESCRIPTION = "host discovery and link events"


def _add_host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="host.conf (YAML)")
    p.add_argument("--sysfs-root", help="sysfs to read (default: host.conf's, else /sys)")
    p.add_argument("--netns", help="network namespace holding the PF/VF netdevs")
    p.add_argument("--cmdline-file", help="kernel cmdline (default /proc/cmdline)")
    p.add_argument("--kmsg-file", help="kernel log as text (default: /dev/kmsg)")
    p.add_argument("--cpuinfo-file", help="CPU information (default: /proc/cpuinfo)")


def build_parser() -> argparse.ArgumentParser:
    from sriov.common import runtime
    from sriov.common.config import add_options

    parser = argparse.ArgumentParser(prog=NAME, description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the host daemon")
    _add_host_args(run)
    add_options(run, runtime.BusSettings)
    sim = sub.add_parser("simulate", help="write a simulated host (sysfs tree, veth netdevs)")
    sim.add_argument("--spec", default="guide", help="guide, models, bench or a YAML spec file")
    sim.add_argument("--root", required=True, help="directory to write the sysfs tree into")
    sim.add_argument("--netns", help="create the PF/VF netdevs as veths in this namespace")
    sim.add_argument("--write-config", help="write a matching host.conf here")
    sim.add_argument("--nats-url", help="NATS URL to put into the written host.conf")
    sim.add_argument("--remove", action="store_true", help="delete the tree and the namespace")
    sim.add_argument(
        "--link",
        action="append",
        default=[],
        metavar="IFNAME=up|down",
        help="raise or drop the carrier of a simulated netdev (needs --netns)",
    )
    doc = sub.add_parser("doctor", help="check the host against the guide's set-up steps")
    _add_host_args(doc)
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    dis = sub.add_parser("discover", help="print what hostd would publish (no NATS needed)")
    _add_host_args(dis)
    dis.add_argument("-o", "--output", choices=("table", "json"), default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGHUP's default action ends the process, and the daemon takes it over only once it
    # runs (a second or more later): one that arrives meanwhile (a reload right after a
    # restart) is kept and done then. Before any import of ours, so the window is the
    # interpreter's start alone.
    asked: list[bool] = []
    if argv[:1] == ["run"]:
        signal.signal(signal.SIGHUP, lambda *_: asked.append(True))
    from sriov.common.errors import SriovError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            _run(args, asked)
        elif args.command == "simulate":
            sys.exit(_simulate(args))
        elif args.command == "discover":
            sys.exit(_discover(args))
        else:
            sys.exit(_doctor(args))
    except SriovError as exc:
        print(f"{NAME}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def _options(args: argparse.Namespace) -> tuple[object, object, dict[str, Any]]:
    from sriov.hostd.agent import Options
    from sriov.hostd.hostconf import read_host_conf

    conf, bus_keys = read_host_conf(args.config)
    opts = Options(
        config_path=Path(args.config),
        sysfs_root=args.sysfs_root,
        netns=args.netns,
        cmdline_file=args.cmdline_file,
        kmsg_file=args.kmsg_file,
        cpuinfo_file=args.cpuinfo_file,
    )
    return conf, opts, bus_keys


def _run(args: argparse.Namespace, asked: list[bool]) -> None:
    from sriov.common import runtime
    from sriov.common.config import from_args
    from sriov.hostd.agent import HostAgent, Options
    from sriov.hostd.hostconf import HostConf

    conf, opts, bus_keys = _options(args)
    assert isinstance(conf, HostConf) and isinstance(opts, Options)
    settings = from_args(runtime.BusSettings, args, **bus_keys)

    async def body(ctx: runtime.ServiceContext) -> None:
        agent = HostAgent(ctx.bus, conf, opts, stop=ctx.stop)
        ctx.stack.callback(agent.close)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.request_reload)
        if asked:
            agent.request_reload()
        await agent.start(ctx.spawn)
        await agent.register(ctx.service)

    async def start() -> None:
        logging.getLogger(NAME).info("host_id %s", conf.host_id)  # for sriovctl nats-config
        await runtime.serve(NAME, DESCRIPTION, settings, body, metadata={"host_id": conf.host_id})

    runtime.run(start, NAME)


def _simulate(args: argparse.Namespace) -> int:
    from sriov.common.errors import ConfigError
    from sriov.hostd.simulator import netdevs
    from sriov.hostd.simulator.spec import host_conf_text, load_spec
    from sriov.hostd.simulator.tree import is_simulated, load_state, remove_tree, write_tree

    root = Path(args.root)
    if args.remove:
        ns = args.netns
        if ns is None and is_simulated(root):
            ns = load_state(root).netns
        removed = netdevs.remove_netns(ns) if ns else False
        remove_tree(root)
        print(f"removed {root}" + (f" and namespace {ns}" if removed else ""))
        return 0
    if args.link:
        if not args.netns:
            raise ConfigError("--link needs --netns (the namespace holding the veths)")
        for item in args.link:
            name, _, state = item.partition("=")
            if state not in ("up", "down"):
                raise ConfigError(f"--link {item!r}: expected IFNAME=up or IFNAME=down")
            netdevs.set_link(args.netns, name, state == "up")
        return 0
    spec = load_spec(args.spec)
    state = write_tree(spec, root, args.netns)
    print(
        f"wrote {root}: {len(state.pfs)} PFs, "
        f"{sum(1 for d in state.netdevs if d.role == 'vf')} VF netdevs"
    )
    cmdline = root.parent / "cmdline"
    kmsg = root.parent / "kmsg.log"
    cpuinfo = root.parent / "cpuinfo"
    cmdline.write_text((spec.cmdline or spec.default_cmdline()) + "\n")
    kmsg.write_text("\n".join(spec.kernel_log or spec.default_kernel_log()) + "\n")
    vendor = "AuthenticAMD" if spec.iommu == "amd" else "GenuineIntel"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n")
    if args.netns:
        count = netdevs.create(state.netdevs, args.netns)
        print(f"created {count} veth netdevs in namespace {args.netns}")
    if args.write_config:
        extra: dict[str, object] = {
            "sysfs_root": str(root.resolve()),
            "cmdline_file": str(cmdline.resolve()),
            "kmsg_file": str(kmsg.resolve()),
            "cpuinfo_file": str(cpuinfo.resolve()),
        }
        if args.netns:
            extra["netns"] = args.netns
        if args.nats_url:
            extra["nats_url"] = args.nats_url
        out = Path(args.write_config)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(host_conf_text(spec, extra))
        print(f"wrote {out}")
    return 0


def _discovered(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, str | None]:
    """host.conf, options, sysfs and what discovery finds there (doctor and discover)."""
    from sriov.hostd.agent import Options
    from sriov.hostd.discovery import discover
    from sriov.hostd.hostconf import HostConf
    from sriov.hostd.netview import NetView
    from sriov.hostd.pciids import PciIds
    from sriov.hostd.sysfs import Sysfs

    conf, opts, _ = _options(args)
    assert isinstance(conf, HostConf) and isinstance(opts, Options)
    netns = opts.netns if opts.netns is not None else conf.netns
    sysfs = Sysfs(opts.sysfs_root or conf.sysfs_root)
    net = asyncio.run(_net_view(netns))
    found = discover(conf, sysfs, PciIds(conf.pci_ids), net if isinstance(net, NetView) else None)
    return conf, opts, sysfs, found, netns


def _discover(args: argparse.Namespace) -> int:
    """Exit 0, or 1 when a device could not be read (the errors are printed)."""
    import socket

    import msgspec

    from sriov.hostd.discovery import render, snapshot

    conf, _, _, found, _ = _discovered(args)
    snap = snapshot(conf.host_id, conf.hostname or socket.gethostname(), found)
    if args.output == "json":
        print(msgspec.json.format(msgspec.json.encode(snap), indent=2).decode())
    else:
        print(render(snap))
    return 1 if snap.errors else 0


def _doctor(args: argparse.Namespace) -> int:
    import msgspec

    from sriov.hostd import doctor
    from sriov.hostd.agent import doctor_inputs

    conf, opts, sysfs, found, netns = _discovered(args)
    findings = doctor.run(doctor_inputs(conf, sysfs, found, opts, netns))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(findings), indent=2).decode())
    else:
        print(doctor.render(findings))
    return 1 if any(f.severity == "error" for f in findings) else 0


async def _net_view(netns: str | None) -> object:
    """Links, routes and addresses for the management check; None if netlink is unusable."""
    from sriov.hostd.netview import dump
    from sriov.hostd.nsock import async_iproute

    try:
        ipr: Any = async_iproute(netns)
        try:
            return await dump(ipr)
        finally:
            ipr.close()
    except Exception:
        return None


if __name__ == "__main__":
    main()
