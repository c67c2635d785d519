"""``sriov-stack up``: the whole system on one machine (see :mod:`sriov.devtools.launcher`).

``--demo`` then walks through the guide (see :mod:`sriov.devtools.demo`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from sriov.common.errors import ConfigError, SriovError
from sriov.devtools.launcher import Stack, running


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sriov-stack", description="the whole system on one machine")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run NATS, PostgreSQL, a simulated host and every service")
    up.add_argument("--state-dir", default=os.environ.get("SRIOV_STATE_DIR", "state"))
    up.add_argument("--hosts", type=int, default=1, help="simulated hosts (default 1)")
    up.add_argument("--replicas", type=int, default=1, help="inventory/scheduler replicas")
    up.add_argument("--nats-port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--pg-port", type=int, default=0, help="0 picks a free port")
    up.add_argument("--demo", action="store_true", help="walk through the guide, narrated")
    up.add_argument("--exit", action="store_true", help="with --demo: stop when it ends")
    up.add_argument("--quiet", action="store_true", help="services' logs only to files")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if not 1 <= args.hosts <= 16 or not 1 <= args.replicas <= 8:
        print("sriov-stack: error: --hosts must be 1-16 and --replicas 1-8", file=sys.stderr)
        sys.exit(2)
    state = Path(args.state_dir).absolute()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack = Stack(state, replicas=args.replicas, hosts=args.hosts, quiet=args.quiet)
    code = 0
    try:
        with running(stack, args.nats_port, args.pg_port):
            os.environ["SRIOV_STATE_DIR"] = str(state)
            if args.demo:
                from sriov.devtools.demo import run_demo

                code = run_demo(stack)
            if args.demo and (args.exit or code != 0):
                raise SystemExit(code)
            stack._say("running; press Ctrl-C to stop (sriovctl services lists what runs)")
            while not stop.is_set():
                if dead := stack.dead():
                    names = ", ".join(f"{p.name} (exit {p.popen.returncode})" for p in dead)
                    stack._say(f"stopping: {names} died; see {state / 'logs'}")
                    code = 1
                    break
                stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    except (SriovError, ConfigError) as exc:
        print(f"sriov-stack: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
